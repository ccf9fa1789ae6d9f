"""The GCP Cloud KMS backend (`gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K`).

The key id is the CryptoKey resource name. A DEK is wrapped by Cloud KMS `Encrypt` under the
key's primary version; the wrapped DEK is Cloud KMS's ciphertext as is (it names its version,
so `Decrypt` needs no version). The encryption context is bound as additional authenticated
data, encoded as compact JSON with sorted keys (`{"a":"1","b":"2"}`, UTF-8; an empty context
sends no AAD), so `gcloud kms decrypt --additional-authenticated-data-file` can open a DEK too.

Every request and response carries CRC32C checksums and is verified as Google recommends; a
mismatch is reported as `KmsUnavailableError` (retryable). The client's own retries are off:
`broker.kms.resilience` retries, in one place for every backend.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from broker.errors import (
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
)
from broker.kms.base import BackendKey, GeneratedKey, KeyVersionInfo, WrappedKey
from broker.kms.gcp._sdk import sdk

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from broker.kms.gcp.settings import GcpKmsSettings

__all__ = ["GcpKmsBackend", "context_aad"]

_T = TypeVar("_T")
SCOPES = ("https://www.googleapis.com/auth/cloudkms",)
INTEGRITY_MESSAGE = "key management service response failed its integrity check; retry"
_KEY_ID = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
_VERSION_NAME = re.compile(r"/cryptoKeyVersions/([0-9]+)$")
_DEK_BYTES = 32
# A KMS that comes back should be found within seconds, not after gRPC's default 120 s backoff.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
_PENDING_POLL_SECONDS = 0.2


def context_aad(context: Mapping[str, str]) -> bytes:
    """Encode an encryption context as Cloud KMS AAD: sorted compact JSON, empty for none."""
    if not context:
        return b""
    text = json.dumps(dict(context), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _crc32c(data: bytes | bytearray) -> int:
    """CRC32C as Cloud KMS computes it."""
    return int(sdk().crc32c.value(bytes(data)))


def _is_loopback(endpoint: str) -> bool:
    """Whether HOST:PORT names this machine (test servers and emulators get plaintext)."""
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_credentials(path: str) -> object:
    """Load a service-account key file (only that type: other kinds come through ADC)."""
    accounts = sdk().service_account
    auth = sdk().auth_exceptions
    try:
        return accounts.Credentials.from_service_account_file(path, scopes=list(SCOPES))
    except (OSError, ValueError, auth.GoogleAuthError) as exc:
        msg = f"backends.gcp.credentials_file {path!r} is not a readable service-account key"
        raise ConfigError(msg) from exc


def _build_client(settings: GcpKmsSettings) -> Any:  # noqa: ANN401 - the SDK is untyped here
    """Create the one KeyManagementServiceClient this backend shares across threads."""
    kms = sdk().kms
    transport_cls = kms.services.key_management_service.transports.KeyManagementServiceGrpcTransport
    if settings.endpoint and _is_loopback(settings.endpoint):
        channel = grpc.insecure_channel(settings.endpoint, options=_CHANNEL_OPTIONS)
        return kms.KeyManagementServiceClient(transport=transport_cls(channel=channel))

    def create_channel(host: str, **kwargs: Any) -> grpc.Channel:  # noqa: ANN401
        kwargs["options"] = [*kwargs.get("options", ()), *_CHANNEL_OPTIONS]
        return transport_cls.create_channel(host, **kwargs)  # type: ignore[no-any-return]

    credentials = (
        _load_credentials(settings.credentials_file) if settings.credentials_file else None
    )
    auth = sdk().auth
    host = settings.endpoint or "cloudkms.googleapis.com"
    try:
        transport = transport_cls(host=host, credentials=credentials, channel=create_channel)
    except auth.exceptions.DefaultCredentialsError as exc:
        msg = "no Google credentials found: set backends.gcp.credentials_file"
        raise ConfigError(msg) from exc
    return kms.KeyManagementServiceClient(transport=transport)


def _map_error(exc: Exception, *, decrypting: bool) -> Exception:
    """Translate an SDK error into a broker error; the SDK's text stays in the chained cause."""
    api = sdk().api_exceptions
    auth = sdk().auth_exceptions
    if isinstance(exc, api.NotFound):
        return KmsKeyNotFoundError()
    if isinstance(exc, (api.PermissionDenied, api.Unauthenticated, auth.RefreshError)):
        return KmsAuthenticationError()
    if isinstance(exc, api.FailedPrecondition):
        return KeyStateError()
    if isinstance(exc, api.InvalidArgument) and decrypting:
        return KmsInvalidCiphertextError()
    unavailable = (
        api.ServiceUnavailable,
        api.DeadlineExceeded,
        api.ResourceExhausted,
        api.InternalServerError,
        api.Aborted,
        api.RetryError,
        auth.TransportError,
    )
    if isinstance(exc, unavailable):
        return KmsUnavailableError()
    return KmsError()


def _checked_request(key_id: str, field: str, data: bytes, aad: bytes) -> dict[str, Any]:
    """An Encrypt/Decrypt request carrying CRC32C checksums of its payload and AAD."""
    request: dict[str, Any] = {"name": key_id, field: data, f"{field}_crc32c": _crc32c(data)}
    if aad:
        request["additional_authenticated_data"] = aad
        request["additional_authenticated_data_crc32c"] = _crc32c(aad)
    return request


def _version_of(name: str) -> int:
    """The N of `…/cryptoKeyVersions/N`."""
    match = _VERSION_NAME.search(name)
    if match is None:
        raise KmsUnavailableError(INTEGRITY_MESSAGE)
    return int(match.group(1))


def _version_info(version: Any) -> KeyVersionInfo:  # noqa: ANN401 - a proto-plus message
    """Describe one CryptoKeyVersion; any state but ENABLED refuses to serve."""
    enabled = version.state.name == "ENABLED"
    return KeyVersionInfo(
        version=_version_of(str(version.name)),
        state="enabled" if enabled else "disabled",
        created=version.create_time,
    )


def _check_key_id(key_id: str) -> str:
    """Refuse malformed key ids before they reach the network."""
    if _KEY_ID.fullmatch(key_id) is None:
        raise KmsKeyNotFoundError
    return key_id


class GcpKmsBackend:
    """KmsBackend over Cloud KMS; blocking SDK calls run on an owned thread pool."""

    scheme = "gcp-kms"

    def __init__(self, settings: GcpKmsSettings, *, client: Any | None = None) -> None:  # noqa: ANN401
        """Use `client` (a KeyManagementServiceClient) when given, else build one."""
        self._settings = settings
        self._owns_client = client is None
        self._client = client if client is not None else _build_client(settings)
        self._executor = ThreadPoolExecutor(settings.max_workers, thread_name_prefix="gcp-kms")
        # Calls that can run at once; the resilience layer queues the rest outside the breaker.
        self.max_concurrency: int | None = settings.max_workers
        self._rotate_lock = threading.Lock()
        self._last_key_id: str | None = None

    async def _run(self, fn: Callable[..., _T], *args: object, decrypting: bool = False) -> _T:
        """Run a blocking SDK call off the event loop, mapping its errors."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args))
        except (KmsError, KeyStateError):
            raise
        except Exception as exc:
            raise _map_error(exc, decrypting=decrypting) from exc

    def _rpc(self) -> dict[str, Any]:
        """Per-call options: one deadline, and no SDK-level retries."""
        return {"retry": None, "timeout": self._settings.timeout}

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """Make a DEK locally (os.urandom) and have Cloud KMS wrap it."""
        dek = bytearray(os.urandom(_DEK_BYTES))
        wrapped = await self.wrap(key_id, bytes(dek), context)
        return GeneratedKey(plaintext=dek, wrapped=wrapped.wrapped, key_version=wrapped.key_version)

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Encrypt the DEK under the key's primary version, with the context as AAD."""
        return await self._run(self._encrypt, _check_key_id(key_id), dek, context_aad(context))

    def _encrypt(self, key_id: str, plaintext: bytes, aad: bytes) -> WrappedKey:
        """Encrypt with checksums both ways."""
        request = _checked_request(key_id, "plaintext", plaintext, aad)
        response = self._client.encrypt(request=request, **self._rpc())
        self._last_key_id = key_id
        ciphertext = bytes(response.ciphertext)
        intact = (
            response.verified_plaintext_crc32c
            and (response.verified_additional_authenticated_data_crc32c or not aad)
            and response.ciphertext_crc32c == _crc32c(ciphertext)
            and str(response.name).startswith(key_id + "/cryptoKeyVersions/")
        )
        if not intact:
            raise KmsUnavailableError(INTEGRITY_MESSAGE)
        return WrappedKey(wrapped=ciphertext, key_version=_version_of(str(response.name)))

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Decrypt the DEK; Cloud KMS finds the version in the ciphertext itself."""
        del key_version  # the ciphertext names its version
        key_id = _check_key_id(key_id)
        return await self._run(
            self._decrypt, key_id, wrapped, context_aad(context), decrypting=True
        )

    def _decrypt(self, key_id: str, ciphertext: bytes, aad: bytes) -> bytearray:
        """Decrypt with checksums both ways."""
        request = _checked_request(key_id, "ciphertext", ciphertext, aad)
        response = self._client.decrypt(request=request, **self._rpc())
        self._last_key_id = key_id
        plaintext = bytearray(response.plaintext)
        if response.plaintext_crc32c != _crc32c(plaintext):
            plaintext[:] = bytes(len(plaintext))
            raise KmsUnavailableError(INTEGRITY_MESSAGE)
        return plaintext

    async def describe_key(self, key_id: str) -> BackendKey:
        """GetCryptoKey for the primary, ListCryptoKeyVersions for every version."""
        return await self._run(self._describe, _check_key_id(key_id))

    def _describe(self, key_id: str) -> BackendKey:
        """Read the key and all its versions (every page)."""
        key = self._client.get_crypto_key(name=key_id, **self._rpc())
        pages = self._client.list_crypto_key_versions(request={"parent": key_id}, **self._rpc())
        versions = sorted((_version_info(v) for v in pages), key=lambda v: v.version)
        primary = str(key.primary.name) if key.primary else ""
        algorithm = key.version_template.algorithm.name
        return BackendKey(
            key_id=key_id,
            current_version=_version_of(primary) if primary else 0,
            versions=tuple(versions),
            algorithm=(
                "aes-256-gcm"
                if algorithm == "GOOGLE_SYMMETRIC_ENCRYPTION"
                else algorithm.lower().replace("_", "-")
            ),
            rotatable=key.purpose.name == "ENCRYPT_DECRYPT",
        )

    async def rotate_key(self, key_id: str) -> BackendKey:
        """CreateCryptoKeyVersion, wait until it is enabled, make it primary."""
        return await self._run(self._rotate, _check_key_id(key_id))

    def _rotate(self, key_id: str) -> BackendKey:
        """Rotate; serialised in this process so two rotations do not interleave."""
        with self._rotate_lock:
            version = self._client.create_crypto_key_version(
                parent=key_id, crypto_key_version={}, **self._rpc()
            )
            name = str(version.name)
            for _ in range(int(self._settings.timeout / _PENDING_POLL_SECONDS) + 1):
                if version.state.name != "PENDING_GENERATION":
                    break
                time.sleep(_PENDING_POLL_SECONDS)
                version = self._client.get_crypto_key_version(name=name, **self._rpc())
            self._client.update_crypto_key_primary_version(
                name=key_id, crypto_key_version_id=str(_version_of(name)), **self._rpc()
            )
        return self._describe(key_id)

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """UpdateCryptoKeyVersion with state ENABLED or DISABLED."""
        name = f"{_check_key_id(key_id)}/cryptoKeyVersions/{version}"
        state = "ENABLED" if enabled else "DISABLED"
        return await self._run(self._set_state, name, state)

    def _set_state(self, name: str, state: str) -> KeyVersionInfo:
        """Update only the state field."""
        updated = self._client.update_crypto_key_version(
            crypto_key_version={"name": name, "state": state},
            update_mask={"paths": ["state"]},
            **self._rpc(),
        )
        return _version_info(updated)

    async def health(self) -> None:
        """Read the last key used; before any use, check that the channel can connect."""
        key_id = self._last_key_id
        if key_id is not None:
            await self._run(partial(self._client.get_crypto_key, name=key_id, **self._rpc()))
            return
        channel = getattr(self._client.transport, "grpc_channel", None)
        if channel is not None:
            await self._run(self._wait_ready, channel)

    def _wait_ready(self, channel: grpc.Channel) -> None:
        """Wait for the channel to connect within the timeout."""
        try:
            grpc.channel_ready_future(channel).result(timeout=self._settings.timeout)
        except grpc.FutureTimeoutError as exc:
            raise KmsUnavailableError from exc

    async def close(self) -> None:
        """Close the thread pool, and the channel when this backend built the client."""
        if self._owns_client:
            await asyncio.to_thread(self._client.transport.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
