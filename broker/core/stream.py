"""Format 2: a long plaintext sealed as a sequence of independently authenticated segments.

After the format 2 header (see ``broker.core.wire``) come segments of ``S + 16`` bytes, the last
one ``16..S + 16`` bytes (docs/wire-format.md, "Format 2")::

    segment key   = HKDF-SHA256(DEK, salt=stream salt, info="keybroker/v1/stream-aes-256-gcm")
    segment nonce = 7 zero bytes || u32 index || 0x01 if last else 0x00
    segment AAD   = SHA-256(header || canonical context)

The last-segment flag in the nonce makes truncation at a segment boundary detectable; the index
makes dropping, reordering and duplicating segments detectable.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import TYPE_CHECKING, Protocol, TypeAlias

from cryptography.exceptions import InvalidTag

from broker.core.aead import STREAM_SALT_SIZE, TAG_SIZE, AeadError
from broker.core.wire import (
    DEFAULT_SEGMENT_SIZE,
    FORMAT_STREAM,
    FORMAT_V1,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    EnvelopeFormatError,
    Header,
    parse_header,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from broker.core.aead import DataKey

__all__ = [
    "MAX_SEGMENTS",
    "StreamDecryptor",
    "StreamEncryptor",
    "open_stream",
    "seal_stream",
]

MAX_SEGMENTS = 2**32

_U32 = struct.Struct(">I")
_NONCE_PAD = bytes(7)

_Chunk: TypeAlias = bytes | bytearray | memoryview


class _SegmentFn(Protocol):
    """Seals or opens one segment."""

    def __call__(self, segment: _Chunk, /, *, last: bool) -> bytes:
        """The processed segment."""
        ...


def _segment_nonce(index: int, *, last: bool) -> bytes:
    """Build the nonce that pins a segment to its position and marks the final one."""
    return _NONCE_PAD + _U32.pack(index) + (b"\x01" if last else b"\x00")


def _segment_aad(header: bytes, context: bytes) -> bytes:
    """Digest the header and context once, so each segment's AAD is 32 bytes."""
    return hashlib.sha256(header + context).digest()


def _stream_header(dk: DataKey, prefix: bytes, segment_size: int, salt: bytes) -> bytes:
    """Complete a header prefix into a format 2 header, checking it against the data key."""
    if not prefix or prefix[0] not in (FORMAT_V1, FORMAT_STREAM):
        raise ValueError("prefix is not a header prefix")
    header = bytes((FORMAT_STREAM,)) + prefix[1:] + _U32.pack(segment_size) + salt
    parsed = parse_header(header)
    if parsed is None or len(parsed.raw) != len(header):
        raise ValueError("prefix is not a header prefix")
    if not dk.matches(parsed.commitment):
        raise ValueError("prefix commitment was not made from this data key")
    return header


def _whole_segments(buffer: bytearray, chunk: _Chunk, size: int, process: _SegmentFn) -> bytes:
    """Feed chunk through a one-segment buffer; process every full segment known not to be last.

    A full buffer is processed only once more input arrives, because the last segment is the
    one at the end of the input. Whole segments in the chunk skip the buffer (no copy).
    """
    out: list[bytes] = []
    view = memoryview(chunk)
    while view:
        if len(buffer) == size:
            out.append(process(buffer, last=False))
            buffer.clear()
        if not buffer and len(view) > size:
            out.append(process(view[:size], last=False))
            view = view[size:]
            continue
        room = size - len(buffer)
        buffer += view[:room]
        view = view[room:]
    return b"".join(out)


class StreamEncryptor:
    """Seals a plaintext of any length incrementally, holding at most one segment of it."""

    def __init__(
        self,
        dk: DataKey,
        prefix: bytes,
        context: bytes,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        salt: bytes | None = None,
    ) -> None:
        """Start a stream from an ``encode_prefix`` result of either version (sent as format 2).

        ``salt`` is random unless fixed (known-answer vectors only).
        """
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}")
        if salt is None:
            salt = os.urandom(STREAM_SALT_SIZE)
        elif len(salt) != STREAM_SALT_SIZE:
            raise ValueError(f"stream salt must be {STREAM_SALT_SIZE} bytes")
        self._header = _stream_header(dk, prefix, segment_size, salt)
        self._cipher: AESGCM = dk.segment_cipher(salt)
        self._aad = _segment_aad(self._header, context)
        self._segment_size = segment_size
        self._buffer = bytearray()
        self._index = 0
        self._finished = False

    def header(self) -> bytes:
        """Return the format 2 header, which the caller emits before any segment."""
        return self._header

    def _seal(self, plaintext: _Chunk, *, last: bool) -> bytes:
        """Seal the next segment."""
        if self._index >= MAX_SEGMENTS:
            self._finished = True
            raise ValueError(f"a stream holds at most {MAX_SEGMENTS} segments")
        nonce = _segment_nonce(self._index, last=last)
        self._index += 1
        return self._cipher.encrypt(nonce, plaintext, self._aad)

    def update(self, chunk: _Chunk) -> bytes:
        """Add plaintext; return the segments that are complete and known not to be the last."""
        if self._finished:
            raise RuntimeError("stream is already finalized")
        return _whole_segments(self._buffer, chunk, self._segment_size, self._seal)

    def finalize(self) -> bytes:
        """Seal the buffered rest as the last segment (empty for an empty stream); call once."""
        if self._finished:
            raise RuntimeError("stream is already finalized")
        self._finished = True
        last = self._seal(self._buffer, last=True)
        self._buffer[:] = bytes(len(self._buffer))
        self._buffer.clear()
        return last


class StreamDecryptor:
    """Opens the segments that follow a format 2 header, releasing each once it authenticates.

    ``update`` takes the bytes after the header. A segment is treated as the last one only at
    ``finalize``, so up to one sealed segment stays buffered between calls.
    """

    def __init__(self, dk: DataKey, header: Header, context: bytes) -> None:
        """Check the key commitment and derive the stream's segment key."""
        if header.version != FORMAT_STREAM:
            raise EnvelopeFormatError("not a format 2 envelope")
        if not dk.matches(header.commitment):
            raise AeadError
        self._cipher: AESGCM = dk.segment_cipher(header.salt)
        self._aad = _segment_aad(header.raw, context)
        self._sealed_size = header.segment_size + TAG_SIZE
        self._buffer = bytearray()
        self._index = 0
        self._finished = False
        self._failed = False

    def _check_usable(self) -> None:
        """Refuse use after a failure or after finalize."""
        if self._failed:
            raise AeadError
        if self._finished:
            raise RuntimeError("stream is already finalized")

    def _open(self, sealed: _Chunk, *, last: bool) -> bytes:
        """Open the next segment; any failure poisons the stream."""
        if self._index >= MAX_SEGMENTS or len(sealed) < TAG_SIZE:
            self._failed = True
            raise AeadError
        nonce = _segment_nonce(self._index, last=last)
        try:
            plaintext = self._cipher.decrypt(nonce, sealed, self._aad)
        except InvalidTag:
            self._failed = True
            raise AeadError from None
        self._index += 1
        return plaintext

    def update(self, chunk: _Chunk) -> bytes:
        """Add sealed bytes; return the plaintext of segments that authenticated as not last."""
        self._check_usable()
        return _whole_segments(self._buffer, chunk, self._sealed_size, self._open)

    def finalize(self) -> bytes:
        """Open the buffered rest as the last segment; fails if the stream was cut short."""
        self._check_usable()
        self._finished = True
        plaintext = self._open(self._buffer, last=True)
        self._buffer.clear()
        return plaintext


def open_stream(dk: DataKey, header: Header, body: bytes, context: bytes) -> bytes:
    """Open a whole format 2 envelope body held in memory (unary ``Decrypt``)."""
    decryptor = StreamDecryptor(dk, header, context)
    return decryptor.update(body) + decryptor.finalize()


def seal_stream(  # noqa: PLR0913 -- mirrors StreamEncryptor's parameters
    dk: DataKey,
    prefix: bytes,
    plaintext: bytes,
    context: bytes,
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    salt: bytes | None = None,
) -> bytes:
    """Seal a whole plaintext held in memory as a format 2 envelope."""
    encryptor = StreamEncryptor(dk, prefix, context, segment_size, salt)
    return encryptor.header() + encryptor.update(plaintext) + encryptor.finalize()
