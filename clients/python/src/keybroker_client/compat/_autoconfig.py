"""The package-level ``encrypt``/``decrypt``: one ``EnvelopeEncryptor`` set up from ECL_CRYPTO_*.

As with the seed, the first call reads the environment and builds one encryptor that later
calls share. ``ECL_CRYPTO_KMS_BACKEND`` and ``ECL_CRYPTO_KMS_KEY_ID`` (with the GCP key ring
and the Vault mount point) choose the backend key, which maps to a broker key; without them
the broker's key ``default`` is used, which is the key a daemon started with those
variables serves. ``ECL_CRYPTO_DEK_CACHE_*`` configure the cache used for envelopes opened
here. ``ECL_CRYPTO_LOCAL_MASTER_KEY`` is read only to open envelopes the seed sealed with
its local backend; new envelopes are sealed by the broker. Credentials (the Vault token, AWS
profiles) are never read: they belong in the daemon's environment.

With ``key=`` given, ``encrypt``/``decrypt`` are the seed's direct AES-256-GCM functions.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Final

from . import symmetric
from ._util import invalid
from .cache import DEKCache
from .envelope import EnvelopeEncryptor
from .exceptions import UnsupportedBackendError
from .kms import (
    AWSKMSBackend,
    BrokerKMSBackend,
    GCPKMSBackend,
    LocalKMSBackend,
    VaultKMSBackend,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .kms.base import KMSBackend

__all__ = [
    "decrypt",
    "default_encryptor",
    "encrypt",
    "encryptor_from_env",
    "migrate_envelope",
    "reset_default_encryptor",
]

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_GCP_RING: Final = (
    "ECL_CRYPTO_GCP_PROJECT_ID",
    "ECL_CRYPTO_GCP_LOCATION_ID",
    "ECL_CRYPTO_GCP_KEY_RING_ID",
)


def _setting(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value, stripped; None when unset or blank."""
    value = env.get(name, "").strip()
    return value or None


def _local(env: Mapping[str, str]) -> KMSBackend:
    """The local backend, holding the seed's master key (if set) to open the seed's envelopes."""
    hexed = _setting(env, "ECL_CRYPTO_LOCAL_MASTER_KEY")
    try:
        master = None if hexed is None else bytes.fromhex(hexed)
    except ValueError:
        raise invalid("ECL_CRYPTO_LOCAL_MASTER_KEY must be 64 hex characters") from None
    return LocalKMSBackend(master_key=master)


def _aws(env: Mapping[str, str]) -> KMSBackend:
    """The AWS backend with the seed's settings (shown in repr; the broker uses its own)."""
    return AWSKMSBackend(
        region_name=_setting(env, "ECL_CRYPTO_AWS_REGION"),
        profile_name=_setting(env, "ECL_CRYPTO_AWS_PROFILE"),
        endpoint_url=_setting(env, "ECL_CRYPTO_AWS_ENDPOINT_URL"),
    )


def _gcp(env: Mapping[str, str]) -> KMSBackend:
    """The GCP backend: the three key-ring variables are required, as with the seed."""
    values = [_setting(env, name) for name in _GCP_RING]
    missing = [name for name, value in zip(_GCP_RING, values, strict=True) if value is None]
    if missing:
        raise invalid(f"ECL_CRYPTO_KMS_BACKEND=gcp needs {', '.join(missing)}")
    project, location, ring = (str(v) for v in values)
    return GCPKMSBackend(project_id=project, location_id=location, key_ring_id=ring)


def _vault(env: Mapping[str, str]) -> KMSBackend:
    """The Vault backend: the mount point builds the key URI; the token is not read."""
    return VaultKMSBackend(
        vault_url=_setting(env, "ECL_CRYPTO_VAULT_URL") or "",
        mount_point=_setting(env, "ECL_CRYPTO_VAULT_MOUNT_POINT") or "transit",
        namespace=_setting(env, "ECL_CRYPTO_VAULT_NAMESPACE"),
    )


_BACKENDS: Final[dict[str, Callable[[Mapping[str, str]], KMSBackend]]] = {
    "aws": _aws,
    "gcp": _gcp,
    "vault": _vault,
    "local": _local,
}


def _number(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive integer setting, or its default when unset."""
    raw = _setting(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise invalid(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


def _cache(env: Mapping[str, str]) -> DEKCache | None:
    """The DEK cache the seed's ECL_CRYPTO_DEK_CACHE_* variables describe (on by default)."""
    enabled = (_setting(env, "ECL_CRYPTO_DEK_CACHE_ENABLED") or "true").lower()
    if enabled not in _TRUE | _FALSE:
        raise invalid(f"ECL_CRYPTO_DEK_CACHE_ENABLED must be true or false, got {enabled!r}")
    if enabled in _FALSE:
        return None
    return DEKCache(
        max_size=_number(env, "ECL_CRYPTO_DEK_CACHE_MAX_SIZE", 100),
        ttl_seconds=_number(env, "ECL_CRYPTO_DEK_CACHE_TTL_SECONDS", 300),
    )


def encryptor_from_env(env: Mapping[str, str]) -> EnvelopeEncryptor:
    """The encryptor the seed's variables describe; the broker's ``default`` key without them."""
    cache = _cache(env)
    name = (_setting(env, "ECL_CRYPTO_KMS_BACKEND") or "").lower()
    if not name:
        return EnvelopeEncryptor(BrokerKMSBackend(), "default", cache)
    make = _BACKENDS.get(name)
    if make is None:
        raise UnsupportedBackendError(
            f"ECL_CRYPTO_KMS_BACKEND={name!r}: expected one of {', '.join(_BACKENDS)}"
        )
    key_id = _setting(env, "ECL_CRYPTO_KMS_KEY_ID")
    if key_id is None and name != "local":
        raise invalid("ECL_CRYPTO_KMS_KEY_ID is required when ECL_CRYPTO_KMS_BACKEND is set")
    return EnvelopeEncryptor(make(env), key_id or "default", cache)


class _Default:
    """The shared encryptor, built from the environment on first use under a lock."""

    def __init__(self) -> None:
        """Nothing is read at import time."""
        self._lock = threading.Lock()
        self._encryptor: EnvelopeEncryptor | None = None

    def get(self) -> EnvelopeEncryptor:
        """Build once, even under concurrent first calls."""
        with self._lock:
            if self._encryptor is None:
                self._encryptor = encryptor_from_env(os.environ)
            return self._encryptor

    def reset(self) -> None:
        """Forget the encryptor; the next call reads the environment again."""
        with self._lock:
            self._encryptor = None


_default = _Default()


def default_encryptor() -> EnvelopeEncryptor:
    """The encryptor behind the package-level ``encrypt``/``decrypt``."""
    return _default.get()


def reset_default_encryptor() -> None:
    """Read the ECL_CRYPTO_* variables again on the next call (tests, reconfiguration)."""
    _default.reset()


def encrypt(
    plaintext: bytes | str, key: bytes | None = None, associated_data: bytes | None = None
) -> str:
    """Seal with the configured envelope encryptor; with ``key=``, AES-256-GCM locally."""
    if key is not None:
        return symmetric.encrypt(plaintext, key, associated_data)
    if associated_data is not None:
        raise invalid(
            "associated_data needs key=; for broker envelopes bind data with "
            "keybroker_client.encrypt(..., context={...})"
        )
    return default_encryptor().encrypt(plaintext)


def decrypt(
    encrypted_data: str | bytes, key: bytes | None = None, associated_data: bytes | None = None
) -> bytes:
    """Open what ``encrypt`` returned (or a seed envelope); with ``key=``, AES-256-GCM locally."""
    if key is not None:
        return symmetric.decrypt(encrypted_data, key, associated_data)
    if associated_data is not None:
        raise invalid("associated_data needs key=")
    return default_encryptor().decrypt(encrypted_data)


def migrate_envelope(encrypted_data: str | bytes) -> str:
    """Re-seal an envelope the seed's ``encrypt`` made as a broker envelope (base64 text)."""
    return default_encryptor().migrate(encrypted_data)
