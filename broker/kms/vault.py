"""Vault / OpenBao Transit backend (`vault-transit://MOUNT/NAME`): Transit wraps DEKs.

The wrapped DEK is Transit's ciphertext string (`vault:vN:...`) stored as UTF-8 bytes; its
`vN` prefix is the key version. The caller's encryption context is bound by Vault when the
key allows it: as AES-GCM/ChaCha20 associated data (`associated_data`), or as the derivation
context of a `derived` key. RSA transit keys cannot bind it: there the envelope header alone
binds the context. Transit signing keys sign (broker/kms/vault_signing.py) and any transit
key computes HMACs (broker/kms/vault_hmac.py).

Auth is a static token, an AppRole login or a Kubernetes service-account login. Before each
call the token is renewed once less than a third of its lease is left (or, when it cannot be
renewed further, the backend logs in again); a call refused with 403 triggers one fresh login
and one retry. hvac is imported on first construction; every call runs on a thread pool owned
by the backend, sized like its HTTP connection pool, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from broker.core.context import EMPTY_CONTEXT, canonical_context
from broker.errors import (
    BrokerError,
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    WrongKeyPurposeError,
)
from broker.kms._lazy import import_extra
from broker.kms.base import BackendKey, GeneratedKey, KeyVersionInfo, WrappedKey
from broker.kms.vault_hmac import VaultHmac
from broker.kms.vault_signing import ALGORITHMS, VaultSigning

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from broker.kms.base import MacResult, PublicKeyInfo, SignResult

__all__ = ["DEFAULT_KUBERNETES_JWT_PATH", "VaultSettings", "VaultTransitBackend", "split_key_id"]

DEFAULT_KUBERNETES_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_EXTRA = "vault"
_T = TypeVar("_T")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CIPHERTEXT = re.compile(r"vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/=]+")
_AEAD_TYPES = frozenset({"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305"})
_AUTH_ERRORS = frozenset({"Forbidden", "Unauthorized"})
_UNAVAILABLE_ERRORS = frozenset(
    {
        "BadGateway",
        "ConnectionError",
        "InternalServerError",
        "RateLimitExceeded",
        "Timeout",
        "TimeoutError",
        "VaultDown",
        "VaultNotInitialized",
    }
)

Auth = Literal["token", "approle", "kubernetes"]


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """How to reach Vault/OpenBao and log in; secrets are kept out of the repr."""

    address: str
    auth: Auth = "token"
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)
    approle_mount: str = "approle"
    kubernetes_role: str | None = None
    kubernetes_jwt_path: str = DEFAULT_KUBERNETES_JWT_PATH
    kubernetes_mount: str = "kubernetes"
    ca_cert: str | None = None
    verify: bool = True
    timeout: float = 5.0
    max_connections: int = 10

    def __post_init__(self) -> None:
        """Reject settings that could only fail later, naming the field."""
        if not self.address.startswith(("http://", "https://")):
            raise ConfigError("backends.vault.address must start with http:// or https://")
        if self.auth not in ("token", "approle", "kubernetes"):
            raise ConfigError("backends.vault.auth must be token, approle or kubernetes")
        if self.auth == "approle" and not (self.role_id and self.secret_id):
            raise ConfigError("backends.vault: auth = approle needs role_id and secret_id")
        if self.auth == "kubernetes" and not self.kubernetes_role:
            raise ConfigError("backends.vault: auth = kubernetes needs kubernetes_role")
        if self.timeout <= 0:
            raise ConfigError("backends.vault.timeout must be > 0 seconds")
        if self.max_connections < 1:
            raise ConfigError("backends.vault.max_connections must be >= 1")


def split_key_id(key_id: str) -> tuple[str, str]:
    """Split `MOUNT/NAME` (the mount may be nested) so no key id can reach another API path."""
    mount, _, name = key_id.rpartition("/")
    segments = [*mount.split("/"), name]
    if not mount or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise KmsKeyNotFoundError("a vault-transit key id must look like MOUNT/NAME")
    return mount, name


def _names(exc: BaseException) -> set[str]:
    """Class names along the exception's hierarchy, so SDK errors match without importing it."""
    return {cls.__name__ for cls in type(exc).__mro__}


def _map_error(exc: Exception) -> BrokerError:  # noqa: PLR0911 - one branch per error class
    """Translate an hvac/requests failure into the broker's KMS errors, with no Vault text."""
    names = _names(exc)
    if names & _AUTH_ERRORS:
        return KmsAuthenticationError()
    if "InvalidPath" in names:
        return KmsKeyNotFoundError()
    if names & _UNAVAILABLE_ERRORS:
        return KmsUnavailableError()
    if "InvalidRequest" not in names:
        return KmsError()
    text = " ".join(getattr(exc, "errors", None) or [str(exc.args[0] if exc.args else "")])
    text = text.lower()
    if "not found" in text:
        return KmsKeyNotFoundError()
    if "disallowed by policy" in text:
        return KeyStateError()
    if "ciphertext" in text or "authentication failed" in text:
        return KmsInvalidCiphertextError()
    if "not support" in text:
        return WrongKeyPurposeError()
    return KmsError()


@dataclass(frozen=True, slots=True)
class _KeyTraits:
    """What decides how a transit key can bind the context."""

    aead: bool
    derived: bool
    encrypts: bool

    def context_params(self, context: bytes) -> dict[str, str]:
        """Derived keys take the encoded context as derivation context, AEAD keys as AAD."""
        blob = base64.b64encode(context).decode()
        if self.derived:
            return {"context": blob}
        if self.aead and context != EMPTY_CONTEXT:
            return {"associated_data": blob}
        return {}


def _traits(data: Mapping[str, Any]) -> _KeyTraits:
    """Read the traits from a `keys/NAME` response."""
    return _KeyTraits(
        aead=data.get("type") in _AEAD_TYPES,
        derived=bool(data.get("derived")),
        encrypts=bool(data.get("supports_encryption", True)),
    )


def _created(value: Any) -> datetime | None:  # noqa: ANN401 - Vault returns int or a dict
    """Symmetric keys list a Unix time per version, asymmetric ones a dict with an ISO time."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, dict) and isinstance(value.get("creation_time"), str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value["creation_time"])
    return None


def _backend_key(key_id: str, data: Mapping[str, Any]) -> BackendKey:
    """Versions below `min_decryption_version` refuse to unwrap: they are reported disabled."""
    latest = int(data["latest_version"])
    lowest_enabled = int(data.get("min_decryption_version") or 1)
    first = max(1, int(data.get("min_available_version") or 1))
    times = data.get("keys") or {}
    versions = tuple(
        KeyVersionInfo(
            version=v,
            state="enabled" if v >= lowest_enabled else "disabled",
            created=_created(times.get(str(v))),
        )
        for v in range(first, latest + 1)
    )
    key_type = str(data.get("type", ""))
    algorithm = "aes-256-gcm" if key_type == "aes256-gcm96" else ALGORITHMS.get(key_type, key_type)
    return BackendKey(key_id=key_id, current_version=latest, versions=versions, algorithm=algorithm)


def _parse_wrapped(wrapped: bytes) -> str:
    """Check a wrapped DEK looks like a Transit ciphertext before sending it anywhere."""
    try:
        text = bytes(wrapped).decode("ascii")
    except UnicodeDecodeError as exc:
        raise KmsInvalidCiphertextError from exc
    if not _CIPHERTEXT.fullmatch(text):
        raise KmsInvalidCiphertextError
    return text


def _key_version(ciphertext: str) -> int:
    """The key version is the `vN` of `vault:vN:...`."""
    match = _CIPHERTEXT.fullmatch(ciphertext)
    if match is None:
        raise KmsError
    return int(match.group(1))


def _b64decode(value: str) -> bytearray:
    """Decode a plaintext the server returned into a wipeable buffer."""
    try:
        return bytearray(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise KmsError from exc


def _make_client(settings: VaultSettings) -> Any:  # noqa: ANN401 - hvac clients are untyped here
    """One hvac client over one pooled HTTP session shared by every call."""
    hvac = import_extra("hvac", _EXTRA)
    requests_adapters = import_extra("requests.adapters", _EXTRA)
    session = import_extra("requests", _EXTRA).Session()
    pool = requests_adapters.HTTPAdapter(pool_maxsize=settings.max_connections)
    session.mount("http://", pool)
    session.mount("https://", pool)
    return hvac.Client(
        url=settings.address,
        token=settings.token,
        namespace=settings.namespace,
        verify=settings.ca_cert or settings.verify,
        timeout=settings.timeout,
        session=session,
    )


class _TokenKeeper:
    """Keeps the client's token valid; every method runs on a worker thread, under one lock."""

    def __init__(
        self,
        client: Any,  # noqa: ANN401 - hvac client
        settings: VaultSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing is known about the token until the first call."""
        self._client = client
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._known = False
        self._expires_at: float | None = None
        self._lease = 0.0
        self._renewable = False
        self.generation = 0

    @property
    def can_login(self) -> bool:
        """AppRole and Kubernetes auth can fetch a fresh token; a static token cannot."""
        return self._settings.auth != "token"

    def ensure(self) -> None:
        """Log in or look the token up once, then renew it when a third of its lease is left."""
        with self._lock:
            if not self._known:
                self._login() if self.can_login else self._inspect()
                return
            if self._expires_at is None or self._expires_at - self._clock() > self._lease / 3:
                return
            if not (self._renewable and self._renew()) and self.can_login:
                self._login()

    def relogin(self, generation: int) -> bool:
        """After a 403: log in again unless another thread did; False if that cannot help.

        A token that still looks itself up is alive, so the 403 is the policy's answer and a
        new login (one more token per refused call) would change nothing.
        """
        if not self.can_login:
            return False
        with self._lock:
            if self.generation == generation:
                if self._alive():
                    return False
                self._login()
        return True

    def _alive(self) -> bool:
        """Whether Vault still accepts the current token (lookup-self)."""
        try:
            self._client.auth.token.lookup_self()
        except Exception as exc:
            if _names(exc) & _AUTH_ERRORS:
                return False
            raise
        return True

    def _record(self, remaining: float, lease: float, *, renewable: bool) -> None:
        """Remember when the token expires (None: never) and how long its lease is."""
        self._known = True
        self._expires_at = None if remaining <= 0 else self._clock() + remaining
        self._lease = lease
        self._renewable = renewable

    def _inspect(self) -> None:
        """Learn a static token's remaining TTL, original TTL and renewability (lookup-self)."""
        if self._settings.token is not None:
            self._client.token = self._settings.token
        data = self._client.auth.token.lookup_self()["data"]
        ttl = float(data.get("ttl") or 0)
        lease = float(data.get("creation_ttl") or ttl)
        self._record(ttl, lease, renewable=bool(data.get("renewable")))

    def _renew(self) -> bool:
        """Renew in place; False when Vault refuses or caps the lease near the token's max TTL."""
        try:
            auth = self._client.auth.token.renew_self()["auth"]
        except Exception as exc:
            if isinstance(_map_error(exc), KmsUnavailableError):
                raise
            self._renewable = False
            return False
        granted = float(auth.get("lease_duration") or 0)
        useful = granted >= self._lease / 3
        self._record(granted, self._lease, renewable=useful and bool(auth.get("renewable")))
        return useful

    def _login(self) -> None:
        """Log in with AppRole or Kubernetes; hvac installs the new token on the client."""
        settings = self._settings
        try:
            if settings.auth == "approle":
                result = self._client.auth.approle.login(
                    role_id=settings.role_id,
                    secret_id=settings.secret_id,
                    mount_point=settings.approle_mount,
                )
            else:
                result = self._client.auth.kubernetes.login(
                    role=settings.kubernetes_role,
                    jwt=self._service_account_jwt(),
                    mount_point=settings.kubernetes_mount,
                )
        except BrokerError:
            raise
        except Exception as exc:
            mapped = _map_error(exc)
            unavailable = isinstance(mapped, KmsUnavailableError)
            raise (mapped if unavailable else KmsAuthenticationError()) from exc
        lease = float(result["auth"].get("lease_duration") or 0)
        self.generation += 1
        self._record(lease, lease, renewable=bool(result["auth"].get("renewable")))

    def _service_account_jwt(self) -> str:
        """Read the projected token on every login: the kubelet rotates it on disk."""
        path = self._settings.kubernetes_jwt_path
        try:
            with open(path, encoding="ascii") as token_file:  # noqa: PTH123 - plain read
                return token_file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            msg = "cannot read the service account token at backends.vault.kubernetes_jwt_path"
            raise KmsAuthenticationError(msg) from exc


def _new_min_decryption(data: Mapping[str, Any], version: int, *, enabled: bool) -> int | None:
    """The min_decryption_version that enables/disables `version`, None if already so."""
    latest = int(data["latest_version"])
    lowest = int(data.get("min_decryption_version") or 1)
    if not max(1, int(data.get("min_available_version") or 1)) <= version <= latest:
        raise KmsKeyNotFoundError("key version not found")
    if (version >= lowest) == enabled:
        return None
    if enabled:
        if version != lowest - 1:
            msg = f"only version {lowest - 1} can be enabled: Vault enables versions newest first"
            raise KeyStateError(msg)
        return version
    if version != lowest:
        msg = f"only version {lowest} can be disabled: Vault disables versions oldest first"
        raise KeyStateError(msg)
    if version == latest:
        raise KeyStateError("the current version cannot be disabled: rotate the key first")
    return version + 1


class VaultTransitBackend:
    """`KmsBackend`, `SigningBackend` and `MacBackend` over Vault or OpenBao transit."""

    scheme = "vault-transit"

    def __init__(self, settings: VaultSettings, *, client: Any | None = None) -> None:  # noqa: ANN401 - hvac client
        """Use `client` (an hvac.Client) when given, else build one from `settings`."""
        if settings.auth == "token" and settings.token is None and client is None:
            raise ConfigError("backends.vault: auth = token needs token")
        self._settings = settings
        self._owns_client = client is None
        self._client: Any = _make_client(settings) if client is None else client
        self._tokens = _TokenKeeper(self._client, settings)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_connections, thread_name_prefix="kms-vault"
        )
        self._traits: dict[str, _KeyTraits] = {}
        self._closed = False
        api = (self._call, self._post, self._read_key, split_key_id)
        self._signing = VaultSigning(*api)
        self._hmac = VaultHmac(*api)

    def __repr__(self) -> str:
        """Show the settings (secrets hidden by their own repr), never the client or token."""
        return f"VaultTransitBackend({self._settings!r})"

    async def _call(self, operation: Callable[[], _T]) -> _T:
        """Run one blocking operation on the backend's threads and translate its errors."""
        if self._closed:
            raise KmsUnavailableError("key management backend is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._authenticated, operation)
        except BrokerError:
            raise
        except Exception as exc:
            raise _map_error(exc) from exc

    def _authenticated(self, operation: Callable[[], _T]) -> _T:
        """Make sure the token is fresh; on a 403, log in again once and retry."""
        self._tokens.ensure()
        generation = self._tokens.generation
        try:
            return operation()
        except Exception as exc:
            if not (_names(exc) & _AUTH_ERRORS) or not self._tokens.relogin(generation):
                raise
        return operation()

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to the API; 204 responses become an empty dict."""
        result = self._client.adapter.post(f"/v1/{path}", json=dict(body))
        return result if isinstance(result, dict) else {}

    def _read_key(self, key_id: str) -> dict[str, Any]:
        """Read a transit key's metadata (and refresh its cached traits)."""
        mount, name = split_key_id(key_id)
        data: dict[str, Any] = self._client.adapter.get(f"/v1/{mount}/keys/{name}")["data"]
        self._traits[key_id] = _traits(data)
        return data

    def _key_traits(self, key_id: str, *, encrypting: bool = False) -> _KeyTraits:
        """The cached traits (they never change for a key); read once per key."""
        traits = self._traits.get(key_id) or _traits(self._read_key(key_id))
        if encrypting and not traits.encrypts:
            raise WrongKeyPurposeError("the transit key does not support encryption")
        return traits

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """`datakey/plaintext` returns the DEK and its wrapped form in one call."""
        mount, name = split_key_id(key_id)
        encoded = canonical_context(context)

        def operation() -> dict[str, Any]:
            params = self._key_traits(key_id, encrypting=True).context_params(encoded)
            return self._post(f"{mount}/datakey/plaintext/{name}", {"bits": 256, **params})

        data = (await self._call(operation))["data"]
        ciphertext = str(data["ciphertext"])
        return GeneratedKey(
            plaintext=_b64decode(data["plaintext"]),
            wrapped=ciphertext.encode(),
            key_version=_key_version(ciphertext),
        )

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """`encrypt` a caller-supplied DEK under the key's latest version."""
        mount, name = split_key_id(key_id)
        plaintext = base64.b64encode(bytes(dek)).decode()
        encoded = canonical_context(context)

        def operation() -> dict[str, Any]:
            params = self._key_traits(key_id, encrypting=True).context_params(encoded)
            return self._post(f"{mount}/encrypt/{name}", {"plaintext": plaintext, **params})

        ciphertext = str((await self._call(operation))["data"]["ciphertext"])
        return WrappedKey(wrapped=ciphertext.encode(), key_version=_key_version(ciphertext))

    async def unwrap(
        self,
        key_id: str,
        key_version: int,  # noqa: ARG002 - the `vault:vN:` prefix names the version
        wrapped: bytes,
        context: Mapping[str, str],
    ) -> bytearray:
        """`decrypt` a wrapped DEK; Vault checks the version policy and the bound context."""
        mount, name = split_key_id(key_id)
        ciphertext = _parse_wrapped(wrapped)
        encoded = canonical_context(context)

        def operation() -> dict[str, Any]:
            params = self._key_traits(key_id).context_params(encoded)
            return self._post(f"{mount}/decrypt/{name}", {"ciphertext": ciphertext, **params})

        return _b64decode((await self._call(operation))["data"]["plaintext"])

    async def describe_key(self, key_id: str) -> BackendKey:
        """Read the key: latest version, creation times, versions below the minimum disabled."""
        return _backend_key(key_id, await self._call(lambda: self._read_key(key_id)))

    async def rotate_key(self, key_id: str) -> BackendKey:
        """`keys/NAME/rotate`: new wraps use the new version, old ones keep unwrapping."""
        mount, name = split_key_id(key_id)

        def operation() -> dict[str, Any]:
            self._post(f"{mount}/keys/{name}/rotate", {})
            return self._read_key(key_id)

        return _backend_key(key_id, await self._call(operation))

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Move `min_decryption_version` by one: Vault disables versions oldest first."""
        mount, name = split_key_id(key_id)

        def operation() -> dict[str, Any]:
            data = self._read_key(key_id)
            minimum = _new_min_decryption(data, version, enabled=enabled)
            if minimum is None:
                return data
            self._post(f"{mount}/keys/{name}/config", {"min_decryption_version": minimum})
            return self._read_key(key_id)

        key = _backend_key(key_id, await self._call(operation))
        return next(v for v in key.versions if v.version == version)

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """A signing key's public half from `keys/NAME` (vault_signing.py)."""
        return await self._signing.public_key(key_id, key_version)

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """Transit `sign` with the latest version (vault_signing.py)."""
        return await self._signing.sign(key_id, message, prehashed=prehashed)

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """Transit `verify` over one or every enabled version (vault_signing.py)."""
        return await self._signing.verify(
            key_id, key_version, message, signature, prehashed=prehashed
        )

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """Transit `hmac` (vault_hmac.py)."""
        return await self._hmac.mac(key_id, data, key_version=key_version)

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """Transit `verify` of an HMAC (vault_hmac.py)."""
        return await self._hmac.verify_mac(key_id, key_version, data, mac)

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """A blind-index MAC under a transit-derived per-label key (vault_hmac.py)."""
        return await self._hmac.derived_mac(key_id, label, data, length)

    async def health(self) -> None:
        """sys/health (unsealed, active or standby) and a lookup of the broker's own token."""

        def operation() -> None:
            query = {"standbyok": "true", "perfstandbyok": "true"}
            self._client.adapter.get("/v1/sys/health", params=query)
            self._client.auth.token.lookup_self()

        await self._call(operation)

    async def close(self) -> None:
        """Stop the worker threads and, if the backend built it, the HTTP session."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            await asyncio.to_thread(self._client.adapter.close)
