"""Streaming sessions: drive the format-2 encryptor/decryptor from chunks of any size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.core.aead import AeadError
from broker.core.wire import MAX_HEADER_SIZE, EnvelopeFormatError, parse_header
from broker.errors import DecryptionFailedError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.core.stream import StreamDecryptor, StreamEncryptor
    from broker.policy.authorizer import Caller
    from broker.services.envelope import EnvelopeService

__all__ = ["DecryptStreamSession", "EncryptStreamSession"]


class EncryptStreamSession:
    """Seals a stream: the header first, then segments as they fill, then the last one."""

    def __init__(self, encryptor: StreamEncryptor) -> None:
        """Wrap an encryptor made by EnvelopeService.open_encrypt_stream."""
        self._enc = encryptor

    def header(self) -> bytes:
        """The stream's header: the first bytes of the envelope."""
        return self._enc.header()

    def feed(self, chunk: bytes) -> bytes:
        """Envelope bytes ready after this plaintext chunk (may be empty)."""
        return self._enc.update(chunk)

    def finish(self) -> bytes:
        """The final segment."""
        return self._enc.finalize()


class DecryptStreamSession:
    """Opens a stream: buffers until the header parses, authorizes, then releases segments."""

    def __init__(
        self, service: EnvelopeService, caller: Caller, context: Mapping[str, str]
    ) -> None:
        """Bind the session to its caller and presented context."""
        self._service = service
        self._caller = caller
        self._context = context
        self._pending = bytearray()
        self._dec: StreamDecryptor | None = None

    async def feed(self, chunk: bytes) -> bytes:
        """Plaintext released by this chunk (segments that authenticated and are not last)."""
        try:
            if self._dec is not None:
                return self._dec.update(chunk)
            self._pending += chunk
            header = parse_header(self._pending)
            if header is None:
                if len(self._pending) > MAX_HEADER_SIZE:
                    raise DecryptionFailedError
                return b""
            self._dec = await self._service.open_decrypt_stream(self._caller, header, self._context)
            rest = bytes(self._pending[len(header.raw) :])
            self._pending.clear()
            return self._dec.update(rest)
        except (AeadError, EnvelopeFormatError):
            raise DecryptionFailedError from None

    def finish(self) -> bytes:
        """The last segment; DecryptionFailedError when the stream was truncated."""
        if self._dec is None:
            raise DecryptionFailedError
        try:
            return self._dec.finalize()
        except AeadError:
            raise DecryptionFailedError from None
