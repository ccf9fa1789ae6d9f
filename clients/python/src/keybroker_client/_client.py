"""The blocking client: one gRPC channel to the daemon's Unix socket, thread-safe."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, BinaryIO, Self, TypeVar

import grpc

from . import _convert as cv
from ._channel import CHANNEL_OPTIONS, DEFAULT_TIMEOUT, check_timeout, resolve_socket, target_for
from ._client_ops import ClientOperations
from ._errors import (
    DecryptionError,
    EncryptionError,
    KeybrokerError,
    KMSError,
    error_from_rpc,
)
from ._gen.envelope_pb2_grpc import EnvelopeServiceStub
from ._gen.key_admin_pb2_grpc import KeyAdminServiceStub
from ._lease import DataKeyLease
from ._sources import SourceGuard, check_chunk_size, check_source, iter_chunks

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from pathlib import Path
    from types import TracebackType

    from ._keys import KeyInfo

__all__ = ["Client"]

_Req = TypeVar("_Req")
_Chunked = TypeVar("_Chunked", bound=cv.StreamResponse)
_DEFAULT_CHUNK = 1 << 20


class Client(ClientOperations):
    """Blocking client for the keybroker daemon; share one instance across threads.

    Every call has a deadline (``timeout`` seconds, default 10) that a call's own
    ``timeout=`` overrides; for streams it covers the whole stream. Signing, hashing,
    derivation and token calls come from ``ClientOperations``.
    """

    def __init__(
        self, socket: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Resolve the socket (argument, env, dev, system); the channel connects on first call."""
        self._timeout = check_timeout(timeout, DEFAULT_TIMEOUT)
        self._socket = resolve_socket(socket)
        self._target = target_for(self._socket)
        self._channel = grpc.insecure_channel(self._target, options=CHANNEL_OPTIONS)
        self._envelope = EnvelopeServiceStub(self._channel)
        self._admin = KeyAdminServiceStub(self._channel)
        self._bind_operations(self._channel)

    @property
    def socket(self) -> Path:
        """The socket path this client dials, for logs and error reports."""
        return self._socket

    def close(self) -> None:
        """Close the channel; calls made afterwards fail."""
        self._channel.close()

    def __enter__(self) -> Self:
        """Use the client in a ``with`` block that closes it on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the channel."""
        self.close()

    def __repr__(self) -> str:
        """Name the socket, which is what one needs to know when debugging a client."""
        return f"Client(socket={str(self._socket)!r}, timeout={self._timeout})"

    def encrypt(
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
        return self._unary(self._envelope.Encrypt, request, EncryptionError, timeout).ciphertext

    def decrypt(
        self,
        ciphertext: bytes,
        *,
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Open an envelope; raises DecryptionError for a wrong context or a damaged envelope."""
        request = cv.decrypt_request(ciphertext, context)
        return self._unary(self._envelope.Decrypt, request, DecryptionError, timeout).plaintext

    def rewrap(
        self,
        ciphertext: bytes,
        *,
        context: Mapping[str, str] | None = None,
        destination_key: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Re-seal an envelope under its key's current version (or another key) after rotation."""
        request = cv.rewrap_request(ciphertext, context, destination_key)
        return self._unary(self._envelope.Rewrap, request, EncryptionError, timeout).ciphertext

    def open_seed_envelope(
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
        method = self._envelope.OpenSeedEnvelope
        response = self._unary(method, request, DecryptionError, timeout)
        return response.ciphertext if request.reseal_key else response.plaintext

    def generate_data_key(
        self,
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[bytes, bytes]:
        """Return a fresh 256-bit key and its envelope, for callers that encrypt themselves."""
        request = cv.generate_data_key_request(key, context)
        response = self._unary(self._envelope.GenerateDataKey, request, EncryptionError, timeout)
        return response.plaintext, response.ciphertext

    def encrypt_batch(
        self,
        plaintexts: Sequence[bytes],
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> list[bytes | KeybrokerError]:
        """Seal many plaintexts in one call; failed items come back as exceptions, in order."""
        request = cv.encrypt_batch_request(plaintexts, key, context)
        response = self._unary(self._envelope.EncryptBatch, request, EncryptionError, timeout)
        return cv.encrypt_batch_results(response)

    def decrypt_batch(
        self,
        ciphertexts: Sequence[bytes],
        *,
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> list[bytes | KeybrokerError]:
        """Open many envelopes in one call; failed items come back as exceptions, in order."""
        request = cv.decrypt_batch_request(ciphertexts, context)
        response = self._unary(self._envelope.DecryptBatch, request, DecryptionError, timeout)
        return cv.decrypt_batch_results(response)

    def encrypt_stream(  # noqa: PLR0913 - the fixed public keywords plus the deadline
        self,
        source: Iterable[bytes] | BinaryIO,
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        store_context: bool = False,
        chunk_size: int = _DEFAULT_CHUNK,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Seal a payload of any size; concatenating the yielded chunks gives the envelope."""
        check_source(source)
        deadline = check_timeout(timeout, self._timeout)
        start = cv.encrypt_stream_start(key, context, store_context=store_context)
        chunks = iter_chunks(source, check_chunk_size(chunk_size))
        requests = map(cv.encrypt_stream_chunk, chunks)
        return self._stream(
            self._envelope.EncryptStream, start, requests, EncryptionError, deadline
        )

    def decrypt_stream(
        self,
        source: Iterable[bytes] | BinaryIO,
        *,
        context: Mapping[str, str] | None = None,
        chunk_size: int = _DEFAULT_CHUNK,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Open a streamed envelope chunk by chunk.

        Each chunk is released only after its segment authenticated, but a stream that
        raises (for example a truncated envelope) must have everything it yielded discarded.
        """
        check_source(source)
        deadline = check_timeout(timeout, self._timeout)
        start = cv.decrypt_stream_start(context)
        chunks = iter_chunks(source, check_chunk_size(chunk_size))
        requests = map(cv.decrypt_stream_chunk, chunks)
        return self._stream(
            self._envelope.DecryptStream, start, requests, DecryptionError, deadline
        )

    def _stream(
        self,
        method: grpc.StreamStreamMultiCallable[_Req, _Chunked],
        start: _Req,
        requests: Iterator[_Req],
        operation_error: type[KeybrokerError],
        deadline: float,
    ) -> Iterator[bytes]:
        """Run a bidirectional stream; the caller's own source errors win over CANCELLED."""
        guard = SourceGuard()
        call = method(guard.wrap(itertools.chain((start,), requests)), timeout=deadline)
        try:
            for response in call:
                yield response.chunk
        except grpc.RpcError as exc:
            if guard.error is not None:
                raise guard.error from None
            raise error_from_rpc(exc, operation_error, target=self._target) from exc
        finally:
            # Stops the RPC when the caller abandons the iterator early (grpc-stubs leaves
            # RpcContext.cancel unannotated).
            call.cancel()  # type: ignore[no-untyped-call]

    def lease_data_key(
        self,
        *,
        key: str = "default",
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> DataKeyLease:
        """Lease a data key to seal many envelopes locally without one RPC each."""
        request = cv.lease_request(key, context)
        return DataKeyLease(
            self._unary(self._envelope.LeaseDataKey, request, EncryptionError, timeout)
        )

    def describe_key(self, key: str, *, timeout: float | None = None) -> KeyInfo:
        """Describe one logical key: backend, purpose and versions, never key material."""
        request = cv.describe_key_request(key)
        return cv.key_info(self._unary(self._admin.DescribeKey, request, KMSError, timeout).key)

    def list_keys(self, *, timeout: float | None = None) -> list[KeyInfo]:
        """List the keys this caller may see, in name order."""
        request = cv.list_keys_request()
        response = self._unary(self._admin.ListKeys, request, KMSError, timeout)
        return [cv.key_info(k) for k in response.keys]

    def rotate_key(self, key: str, *, timeout: float | None = None) -> KeyInfo:
        """Create a new key version; new envelopes use it and old ones still decrypt."""
        request = cv.rotate_key_request(key)
        try:
            return cv.key_info(self._unary(self._admin.RotateKey, request, KMSError, timeout).key)
        finally:
            # Even a timed-out rotation may have happened: refetch the public key next time.
            self._public_keys.forget(key)
