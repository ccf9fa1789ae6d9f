"""The asyncio client: the same operations as ``Client``, as coroutines and async iterators."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, BinaryIO, Self, TypeVar

import grpc
import grpc.aio

from . import _convert as cv
from ._aio_ops import AsyncClientOperations, AsyncStubs
from ._channel import CHANNEL_OPTIONS, DEFAULT_TIMEOUT, check_timeout, resolve_socket, target_for
from ._errors import DecryptionError, EncryptionError, KeybrokerError, KMSError, error_from_rpc
from ._lease import DataKeyLease
from ._public_keys import PublicKeyCache
from ._sources import SourceGuard, aiter_chunks, check_chunk_size, check_source

if TYPE_CHECKING:
    import os
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Callable,
        Iterable,
        Mapping,
        Sequence,
    )
    from pathlib import Path
    from types import TracebackType

    from ._gen.envelope_pb2_grpc import EnvelopeServiceAsyncStub
    from ._keys import KeyInfo

__all__ = ["AsyncClient"]

_Req = TypeVar("_Req")
_Chunked = TypeVar("_Chunked", bound=cv.StreamResponse)
_DEFAULT_CHUNK = 1 << 20


async def _with_start(
    start: _Req, chunks: AsyncIterator[bytes], wrap: Callable[[bytes], _Req]
) -> AsyncIterator[_Req]:
    """Send the parameters first, then every chunk, as both streaming RPCs expect."""
    yield start
    async for chunk in chunks:
        yield wrap(chunk)


class AsyncClient(AsyncClientOperations):
    """Asyncio client for the keybroker daemon; use one instance per event loop.

    The channel is created on first use inside the running loop; ``await close()`` (or
    ``async with``) releases it. Deadlines work as in ``Client``. Signing, hashing,
    derivation and token calls come from ``AsyncClientOperations``.
    """

    def __init__(
        self, socket: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Resolve the socket now, so a bad configuration fails at construction."""
        self._timeout = check_timeout(timeout, DEFAULT_TIMEOUT)
        self._socket = resolve_socket(socket)
        self._target = target_for(self._socket)
        self._channel: grpc.aio.Channel | None = None
        self._stub_set: AsyncStubs | None = None
        self._public_keys = PublicKeyCache()

    @property
    def socket(self) -> Path:
        """The socket path this client dials, for logs and error reports."""
        return self._socket

    def _stubs(self) -> AsyncStubs:
        """Create the channel inside the running loop, since aio channels belong to one loop."""
        if self._stub_set is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS)
            self._stub_set = AsyncStubs.on(self._channel)
        return self._stub_set

    async def close(self) -> None:
        """Close the channel; a later call opens a new one."""
        channel, self._channel = self._channel, None
        self._stub_set = None
        if channel is not None:
            await channel.close(grace=None)

    async def __aenter__(self) -> Self:
        """Use the client in an ``async with`` block that closes it on exit."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the channel."""
        await self.close()

    def __repr__(self) -> str:
        """Name the socket, which is what one needs to know when debugging a client."""
        return f"AsyncClient(socket={str(self._socket)!r}, timeout={self._timeout})"

    async def encrypt(
        self,
        plaintext: bytes,
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        store_context: bool = False,
        timeout: float | None = None,
    ) -> bytes:
        """Seal plaintext under a logical key; the same context must be given to decrypt."""
        request = cv.encrypt_request(plaintext, key, context, store_context=store_context)
        envelope = self._stubs().envelope
        response = await self._unary(envelope.Encrypt, request, EncryptionError, timeout)
        return response.ciphertext

    async def decrypt(
        self,
        ciphertext: bytes,
        *,
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Open an envelope; raises DecryptionError for a wrong context or a damaged envelope."""
        request = cv.decrypt_request(ciphertext, context)
        envelope = self._stubs().envelope
        response = await self._unary(envelope.Decrypt, request, DecryptionError, timeout)
        return response.plaintext

    async def rewrap(
        self,
        ciphertext: bytes,
        *,
        context: Mapping[str, str] | None = None,
        destination_key: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Re-seal an envelope under its key's current version (or another key) after rotation."""
        request = cv.rewrap_request(ciphertext, context, destination_key)
        envelope = self._stubs().envelope
        response = await self._unary(envelope.Rewrap, request, EncryptionError, timeout)
        return response.ciphertext

    async def open_seed_envelope(
        self,
        envelope: bytes | str,
        *,
        key: str,
        reseal_key: str | None = None,
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Open an ecl_crypto_utility envelope whose DEK the KMS key of broker key ``key`` wrapped.

        Returns the plaintext; with ``reseal_key``, the broker envelope now holding it under
        that key and ``context`` (the plaintext never leaves the broker).
        """
        request = cv.open_seed_envelope_request(envelope, key, reseal_key, context)
        method = self._stubs().envelope.OpenSeedEnvelope
        response = await self._unary(method, request, DecryptionError, timeout)
        return response.ciphertext if request.reseal_key else response.plaintext

    async def generate_data_key(
        self,
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[bytes, bytes]:
        """Return a fresh 256-bit key and its envelope, for callers that encrypt themselves."""
        request = cv.generate_data_key_request(key, context)
        envelope = self._stubs().envelope
        response = await self._unary(envelope.GenerateDataKey, request, EncryptionError, timeout)
        return response.plaintext, response.ciphertext

    async def encrypt_batch(
        self,
        plaintexts: Sequence[bytes],
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> list[bytes | KeybrokerError]:
        """Seal many plaintexts in one call; failed items come back as exceptions, in order."""
        request = cv.encrypt_batch_request(plaintexts, key, context)
        envelope = self._stubs().envelope
        response = await self._unary(envelope.EncryptBatch, request, EncryptionError, timeout)
        return cv.encrypt_batch_results(response)

    async def decrypt_batch(
        self,
        ciphertexts: Sequence[bytes],
        *,
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> list[bytes | KeybrokerError]:
        """Open many envelopes in one call; failed items come back as exceptions, in order."""
        request = cv.decrypt_batch_request(ciphertexts, context)
        envelope = self._stubs().envelope
        response = await self._unary(envelope.DecryptBatch, request, DecryptionError, timeout)
        return cv.decrypt_batch_results(response)

    def encrypt_stream(  # noqa: PLR0913 - the fixed public keywords plus the deadline
        self,
        source: Iterable[bytes] | AsyncIterable[bytes] | BinaryIO,
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        store_context: bool = False,
        chunk_size: int = _DEFAULT_CHUNK,
        timeout: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Seal a payload of any size; concatenating the yielded chunks gives the envelope."""
        check_source(source)
        deadline = check_timeout(timeout, self._timeout)
        start = cv.encrypt_stream_start(key, context, store_context=store_context)
        chunks = aiter_chunks(source, check_chunk_size(chunk_size))
        requests = _with_start(start, chunks, cv.encrypt_stream_chunk)
        return self._stream(lambda s: s.EncryptStream, requests, EncryptionError, deadline)

    def decrypt_stream(
        self,
        source: Iterable[bytes] | AsyncIterable[bytes] | BinaryIO,
        *,
        context: Mapping[str, str] | None = None,
        chunk_size: int = _DEFAULT_CHUNK,
        timeout: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Open a streamed envelope chunk by chunk.

        Each chunk is released only after its segment authenticated, but a stream that
        raises (for example a truncated envelope) must have everything it yielded discarded.
        """
        check_source(source)
        deadline = check_timeout(timeout, self._timeout)
        start = cv.decrypt_stream_start(context)
        chunks = aiter_chunks(source, check_chunk_size(chunk_size))
        requests = _with_start(start, chunks, cv.decrypt_stream_chunk)
        return self._stream(lambda s: s.DecryptStream, requests, DecryptionError, deadline)

    async def _stream(
        self,
        method_of: Callable[
            [EnvelopeServiceAsyncStub], grpc.aio.StreamStreamMultiCallable[_Req, _Chunked]
        ],
        requests: AsyncIterator[_Req],
        operation_error: type[KeybrokerError],
        deadline: float,
    ) -> AsyncIterator[bytes]:
        """Run a bidirectional stream; the caller's own source errors win over CANCELLED."""
        guard = SourceGuard()
        envelope = self._stubs().envelope  # here, inside the loop that iterates the stream
        call = method_of(envelope)(guard.awrap(requests), timeout=deadline)
        try:
            async for response in call:
                yield response.chunk
        except asyncio.CancelledError:
            # grpc.aio cancels the call itself when the request iterator raises.
            if guard.error is not None:
                raise guard.error from None
            raise
        except grpc.RpcError as exc:
            if guard.error is not None:
                raise guard.error from None
            raise error_from_rpc(exc, operation_error, target=self._target) from exc
        finally:
            call.cancel()  # stops the RPC when the caller abandons the iterator early

    async def lease_data_key(
        self,
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> DataKeyLease:
        """Lease a data key to seal many envelopes locally without one RPC each."""
        request = cv.lease_request(key, context)
        envelope = self._stubs().envelope
        return DataKeyLease(
            await self._unary(envelope.LeaseDataKey, request, EncryptionError, timeout)
        )

    async def describe_key(self, key: str, *, timeout: float | None = None) -> KeyInfo:
        """Describe one logical key: backend, purpose and versions, never key material."""
        request = cv.describe_key_request(key)
        admin = self._stubs().admin
        return cv.key_info((await self._unary(admin.DescribeKey, request, KMSError, timeout)).key)

    async def list_keys(self, *, timeout: float | None = None) -> list[KeyInfo]:
        """List the keys this caller may see, in name order."""
        admin = self._stubs().admin
        response = await self._unary(admin.ListKeys, cv.list_keys_request(), KMSError, timeout)
        return [cv.key_info(k) for k in response.keys]

    async def rotate_key(self, key: str, *, timeout: float | None = None) -> KeyInfo:
        """Create a new key version; new envelopes use it and old ones still decrypt."""
        request = cv.rotate_key_request(key)
        admin = self._stubs().admin
        try:
            response = await self._unary(admin.RotateKey, request, KMSError, timeout)
        finally:
            # Even a timed-out rotation may have happened: refetch the public key next time.
            self._public_keys.forget(key)
        return cv.key_info(response.key)
