"""Vault / OpenBao Transit backend (`vault-transit://MOUNT/NAME`): Transit wraps DEKs.

The wrapped DEK is Transit's ciphertext string (`vault:vN:...`) stored as UTF-8 bytes; its
`vN` prefix is the key version. The caller's encryption context is bound by Vault when the
key allows it: as AES-GCM/ChaCha20 associated data (`associated_data`), or as the derivation
context of a `derived` key. RSA transit keys cannot bind it: there the envelope header alone
binds the context. Transit signing keys sign (broker/kms/vault/signing.py) and any transit
key computes HMACs (broker/kms/vault/hmac.py).

Auth is a static token, an AppRole login or a Kubernetes service-account login. Before each
call the token is renewed once less than a third of its lease is left (or, when it cannot be
renewed further, the backend logs in again); a call refused with 403 triggers one fresh login
and one retry. hvac is imported on first construction; every call runs on a thread pool owned
by the backend, sized like its HTTP connection pool, so the event loop never blocks.

The token's upkeep lives in auth.py, transit key metadata and ciphertext parsing in
keys.py and the error mapping in errors.py; hvac is imported by _sdk.py alone.
"""

from __future__ import annotations

import asyncio
import base64
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from broker.core.context import canonical_context
from broker.errors import (
    BrokerError,
    ConfigError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    WrongKeyPurposeError,
)
from broker.kms.base import GeneratedKey, WrappedKey
from broker.kms.vault._sdk import sdk
from broker.kms.vault.auth import TokenKeeper
from broker.kms.vault.errors import is_auth_error, map_error
from broker.kms.vault.hmac import VaultHmac
from broker.kms.vault.keys import (
    KeyTraits,
    b64decode,
    backend_key,
    ciphertext_version,
    new_min_decryption,
    parse_wrapped,
    traits_of,
)
from broker.kms.vault.signing import VaultSigning

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from broker.kms.base import BackendKey, KeyVersionInfo, MacResult, PublicKeyInfo, SignResult
    from broker.kms.vault.settings import VaultSettings

__all__ = ["VaultTransitBackend", "split_key_id"]

_T = TypeVar("_T")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def split_key_id(key_id: str) -> tuple[str, str]:
    """Split `MOUNT/NAME` (the mount may be nested) so no key id can reach another API path."""
    mount, _, name = key_id.rpartition("/")
    segments = [*mount.split("/"), name]
    if not mount or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise KmsKeyNotFoundError("a vault-transit key id must look like MOUNT/NAME")
    return mount, name


def _make_client(settings: VaultSettings) -> Any:  # noqa: ANN401 - hvac clients are untyped here
    """One hvac client over one pooled HTTP session shared by every call."""
    hvac = sdk().hvac
    requests_adapters = sdk().requests_adapters
    session = sdk().requests.Session()
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
        self._tokens = TokenKeeper(self._client, settings)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_connections, thread_name_prefix="kms-vault"
        )
        # Calls that can run at once; the resilience layer queues the rest outside the breaker.
        self.max_concurrency: int | None = settings.max_connections
        self._traits: dict[str, KeyTraits] = {}
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
            raise map_error(exc) from exc

    def _authenticated(self, operation: Callable[[], _T]) -> _T:
        """Make sure the token is fresh; on a 403, log in again once and retry."""
        self._tokens.ensure()
        generation = self._tokens.generation
        try:
            return operation()
        except Exception as exc:
            if not is_auth_error(exc) or not self._tokens.relogin(generation):
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
        self._traits[key_id] = traits_of(data)
        return data

    def _key_traits(self, key_id: str, *, encrypting: bool = False) -> KeyTraits:
        """The cached traits (they never change for a key); read once per key."""
        traits = self._traits.get(key_id) or traits_of(self._read_key(key_id))
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
            plaintext=b64decode(data["plaintext"]),
            wrapped=ciphertext.encode(),
            key_version=ciphertext_version(ciphertext),
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
        return WrappedKey(wrapped=ciphertext.encode(), key_version=ciphertext_version(ciphertext))

    async def unwrap(
        self,
        key_id: str,
        key_version: int,  # noqa: ARG002 - the `vault:vN:` prefix names the version
        wrapped: bytes,
        context: Mapping[str, str],
    ) -> bytearray:
        """`decrypt` a wrapped DEK; Vault checks the version policy and the bound context."""
        mount, name = split_key_id(key_id)
        ciphertext = parse_wrapped(wrapped)
        encoded = canonical_context(context)

        def operation() -> dict[str, Any]:
            params = self._key_traits(key_id).context_params(encoded)
            return self._post(f"{mount}/decrypt/{name}", {"ciphertext": ciphertext, **params})

        return b64decode((await self._call(operation))["data"]["plaintext"])

    async def describe_key(self, key_id: str) -> BackendKey:
        """Read the key: latest version, creation times, versions below the minimum disabled."""
        return backend_key(key_id, await self._call(lambda: self._read_key(key_id)))

    async def rotate_key(self, key_id: str) -> BackendKey:
        """`keys/NAME/rotate`: new wraps use the new version, old ones keep unwrapping."""
        mount, name = split_key_id(key_id)

        def operation() -> dict[str, Any]:
            self._post(f"{mount}/keys/{name}/rotate", {})
            return self._read_key(key_id)

        return backend_key(key_id, await self._call(operation))

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Move `min_decryption_version` by one: Vault disables versions oldest first."""
        mount, name = split_key_id(key_id)

        def operation() -> dict[str, Any]:
            data = self._read_key(key_id)
            minimum = new_min_decryption(data, version, enabled=enabled)
            if minimum is None:
                return data
            self._post(f"{mount}/keys/{name}/config", {"min_decryption_version": minimum})
            return self._read_key(key_id)

        key = backend_key(key_id, await self._call(operation))
        return next(v for v in key.versions if v.version == version)

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """A signing key's public half from `keys/NAME` (signing.py)."""
        return await self._signing.public_key(key_id, key_version)

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """Transit `sign` with the latest version (signing.py)."""
        return await self._signing.sign(key_id, message, prehashed=prehashed)

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """Transit `verify` over one or every enabled version (signing.py)."""
        return await self._signing.verify(
            key_id, key_version, message, signature, prehashed=prehashed
        )

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """Transit `hmac` (hmac.py)."""
        return await self._hmac.mac(key_id, data, key_version=key_version)

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """Transit `verify` of an HMAC (hmac.py)."""
        return await self._hmac.verify_mac(key_id, key_version, data, mac)

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """A blind-index MAC under a transit-derived per-label key (hmac.py)."""
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
