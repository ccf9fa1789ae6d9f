"""Which environment variable sets what: KEYBROKER_* overrides and the seed's ECL_CRYPTO_* names.

Every `ECL_CRYPTO_*` name of the seed's configuration tables is read with the seed's meaning;
a few older spellings keep working beside them (`ECL_CRYPTO_VAULT_ADDR`,
`ECL_CRYPTO_VAULT_MOUNT`, `ECL_CRYPTO_DEK_CACHE_TTL`), the seed's name winning when both are
set. Any other `ECL_CRYPTO_*` variable is reported by `seed_warnings` with the closest known
name, since a misspelt one would otherwise be ignored in silence.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any, Final

from broker.errors import ConfigError
from broker.kms.registry import BACKEND_TABLES, LOCAL_SCHEME

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "SEED_PREFIX",
    "backend_overrides",
    "env_settings",
    "known_seed_names",
    "seed_key_uri",
    "seed_master_key",
    "seed_warnings",
]

SEED_PREFIX: Final = "ECL_CRYPTO_"

# environment variable -> (section, field); KEYBROKER_* first, then the seed names
_ENV: dict[str, tuple[str, str]] = {
    "KEYBROKER_SOCKET": ("server", "socket"),
    "KEYBROKER_STATE_DIR": ("server", "state_dir"),
    "KEYBROKER_GRACE_SECONDS": ("server", "grace_seconds"),
    "KEYBROKER_MAX_PLAINTEXT_BYTES": ("server", "max_plaintext_bytes"),
    "KEYBROKER_MAX_BATCH_ITEMS": ("server", "max_batch_items"),
    "KEYBROKER_MAX_CONCURRENT_RPCS": ("server", "max_concurrent_rpcs"),
    "KEYBROKER_MAX_STREAMS_PER_CONNECTION": ("server", "max_streams_per_connection"),
    "KEYBROKER_FIRST_MESSAGE_SECONDS": ("server", "first_message_seconds"),
    "KEYBROKER_STREAM_IDLE_SECONDS": ("server", "stream_idle_seconds"),
    "KEYBROKER_MAX_INFLIGHT_PER_CALLER": ("server", "max_inflight_per_caller"),
    "KEYBROKER_REQUEST_MEMORY_BYTES": ("server", "request_memory_bytes"),
    "KEYBROKER_LOG_LEVEL": ("logging", "level"),
    "KEYBROKER_LOG_FORMAT": ("logging", "format"),
    "KEYBROKER_METRICS_LISTEN": ("metrics", "listen"),
    "KEYBROKER_ALLOW_ROOT": ("server", "allow_root"),
    "KEYBROKER_AUDIT_ENABLED": ("audit", "enabled"),
    "KEYBROKER_AUDIT_FILE": ("audit", "file"),
    "KEYBROKER_AUDIT_STDOUT": ("audit", "stdout"),
    "KEYBROKER_AUDIT_FAIL_CLOSED": ("audit", "fail_closed"),
    "KEYBROKER_AUDIT_CHECKPOINT_SECONDS": ("audit", "checkpoint_seconds"),
    "KEYBROKER_AUDIT_CHECKPOINT_FILE": ("audit", "checkpoint_file"),
    "KEYBROKER_HASHING_MAX_CONCURRENT": ("hashing", "max_concurrent"),
    "KEYBROKER_HASHING_MEMORY_BUDGET_BYTES": ("hashing", "memory_budget_bytes"),
    "KEYBROKER_HASHING_MAX_SHARE_PER_CALLER": ("hashing", "max_share_per_caller"),
    "KEYBROKER_HASHING_MAX_MEMORY_KIB": ("hashing", "max_memory_kib"),
    "KEYBROKER_HASHING_MAX_TIME_COST": ("hashing", "max_time_cost"),
    "KEYBROKER_HASHING_MAX_PARALLELISM": ("hashing", "max_parallelism"),
    "KEYBROKER_KEYRING_MASTER_KEY_URI": ("keyring", "master_key_uri"),
    "KEYBROKER_CACHE_ENABLED": ("cache", "enabled"),
    "KEYBROKER_CACHE_DECRYPT_MAX_ENTRIES": ("cache", "decrypt_max_entries"),
    "KEYBROKER_CACHE_DECRYPT_TTL_SECONDS": ("cache", "decrypt_ttl_seconds"),
    "KEYBROKER_CACHE_DECRYPT_STALE_SECONDS": ("cache", "decrypt_stale_seconds"),
    "KEYBROKER_CACHE_ENCRYPT_MAX_AGE_SECONDS": ("cache", "encrypt_max_age_seconds"),
    "KEYBROKER_CACHE_ENCRYPT_MAX_MESSAGES": ("cache", "encrypt_max_messages"),
    "KEYBROKER_CACHE_ENCRYPT_MAX_BYTES": ("cache", "encrypt_max_bytes"),
    "KEYBROKER_HEALTH_PROBE_SECONDS": ("health", "probe_seconds"),
    "KEYBROKER_HEALTH_TIMEOUT_SECONDS": ("health", "timeout_seconds"),
}
_SEED_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "ECL_CRYPTO_DEK_CACHE_ENABLED": (("cache", "enabled"),),
    "ECL_CRYPTO_DEK_CACHE_TTL": (
        ("cache", "decrypt_ttl_seconds"),
        ("cache", "encrypt_max_age_seconds"),
    ),
    "ECL_CRYPTO_DEK_CACHE_TTL_SECONDS": (  # the seed's name; after the older one, so it wins
        ("cache", "decrypt_ttl_seconds"),
        ("cache", "encrypt_max_age_seconds"),
    ),
    "ECL_CRYPTO_DEK_CACHE_MAX_SIZE": (("cache", "decrypt_max_entries"),),
    "ECL_CRYPTO_DEK_CACHE_MAX_MESSAGES": (("cache", "encrypt_max_messages"),),
    "ECL_CRYPTO_DEK_CACHE_MAX_BYTES": (("cache", "encrypt_max_bytes"),),
}
# environment variable -> (backend table, field); applied over the config file too, in order
_BACKEND_ENV: dict[str, tuple[str, str]] = {
    "ECL_CRYPTO_AWS_REGION": ("aws", "region"),
    "ECL_CRYPTO_AWS_ENDPOINT_URL": ("aws", "endpoint_url"),
    "ECL_CRYPTO_AWS_PROFILE": ("aws", "profile"),
    "ECL_CRYPTO_VAULT_ADDR": ("vault", "address"),
    "ECL_CRYPTO_VAULT_URL": ("vault", "address"),  # the seed's name; after ADDR, so it wins
    "ECL_CRYPTO_VAULT_TOKEN": ("vault", "token"),
    "ECL_CRYPTO_VAULT_NAMESPACE": ("vault", "namespace"),
    "ECL_CRYPTO_GCP_CREDENTIALS_FILE": ("gcp", "credentials_file"),
    "ECL_CRYPTO_GCP_ENDPOINT": ("gcp", "endpoint"),
}
# Names that only describe the key served as `default`, read when no config file is given.
_GCP_RING: Final = (
    "ECL_CRYPTO_GCP_PROJECT_ID",
    "ECL_CRYPTO_GCP_LOCATION_ID",
    "ECL_CRYPTO_GCP_KEY_RING_ID",
)
_VAULT_MOUNTS: Final = ("ECL_CRYPTO_VAULT_MOUNT_POINT", "ECL_CRYPTO_VAULT_MOUNT")  # seed's first
_SEED_KEY_NAMES: Final = (
    "ECL_CRYPTO_KMS_BACKEND",
    "ECL_CRYPTO_KMS_KEY_ID",
    *_GCP_RING,
    *_VAULT_MOUNTS,
)
_SEED_BACKENDS: Final = (LOCAL_SCHEME, "aws", "gcp", "vault")


def known_seed_names() -> tuple[str, ...]:
    """Every ECL_CRYPTO_* variable the daemon reads, in name order."""
    names = {*_SEED_ENV, *_BACKEND_ENV, *_SEED_KEY_NAMES, "ECL_CRYPTO_LOCAL_MASTER_KEY"}
    return tuple(sorted(names))


def _vault_mount(env: Mapping[str, str]) -> str:
    """The transit mount: ECL_CRYPTO_VAULT_MOUNT_POINT, else the older name, else `transit`."""
    for var in _VAULT_MOUNTS:
        mount = env.get(var, "").strip().strip("/")
        if mount:
            return mount
    return "transit"


def _gcp_key_path(env: Mapping[str, str], key_id: str) -> str:
    """`projects/P/locations/L/keyRings/R/cryptoKeys/KEY` from the seed's three ring names."""
    if key_id.startswith("projects/"):
        return key_id
    values = [env.get(var, "").strip() for var in _GCP_RING]
    missing = [var for var, value in zip(_GCP_RING, values, strict=True) if not value]
    if missing:
        raise ConfigError(
            f"{missing[0]}: required when ECL_CRYPTO_KMS_BACKEND=gcp names a crypto key "
            "(or set ECL_CRYPTO_KMS_KEY_ID to the full projects/…/cryptoKeys/NAME path)"
        )
    for var, value in zip(_GCP_RING, values, strict=True):
        if "/" in value:
            raise ConfigError(f"{var}: a single name, without '/' (got {value!r})")
    project, location, ring = values
    return f"projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key_id}"


def seed_key_uri(env: Mapping[str, str]) -> str | None:
    """The URI of the key ECL_CRYPTO_KMS_KEY_ID names; None when no seed backend is set."""
    backend = env.get("ECL_CRYPTO_KMS_BACKEND", "").strip().lower()
    if not backend:
        return None
    if backend not in _SEED_BACKENDS:
        raise ConfigError(
            f"ECL_CRYPTO_KMS_BACKEND: must be one of {', '.join(_SEED_BACKENDS)} (got {backend!r})"
        )
    key_id = env.get("ECL_CRYPTO_KMS_KEY_ID", "").strip()
    if backend == LOCAL_SCHEME:
        return f"{LOCAL_SCHEME}://{key_id or 'default'}"
    if not key_id:
        raise ConfigError("ECL_CRYPTO_KMS_KEY_ID: required when ECL_CRYPTO_KMS_BACKEND is set")
    if backend == "vault":
        key_id = f"{_vault_mount(env)}/{key_id}"
    elif backend == "gcp":
        key_id = _gcp_key_path(env, key_id)
    return f"{BACKEND_TABLES[backend]}://{key_id}"


def seed_warnings(env: Mapping[str, str], *, config_file: bool) -> list[str]:
    """One line per ECL_CRYPTO_* variable set that the daemon will not read."""
    known = known_seed_names()
    warnings = []
    for var in sorted(v for v in env if v.startswith(SEED_PREFIX)):
        if var not in known:
            closest = difflib.get_close_matches(var, known, n=1, cutoff=0.0)
            hint = f"; did you mean {closest[0]}?" if closest else ""
            warnings.append(f"{var}: unknown variable, ignored{hint}")
        elif config_file and var in _SEED_KEY_NAMES:
            warnings.append(
                f"{var}: ignored because a configuration file is given; "
                "declare the key as a [keys.NAME] table there"
            )
    return warnings


def env_settings(env: Mapping[str, str]) -> Iterator[tuple[str, str, str, str]]:
    """(section, field, raw value, variable) per variable set: seed names, then KEYBROKER_*."""
    for var, targets in _SEED_ENV.items():
        if var in env:
            for section, name in targets:
                yield section, name, env[var], var
    for var, (section, name) in _ENV.items():
        if var in env:
            yield section, name, env[var], var


def seed_master_key(env: Mapping[str, str]) -> str | None:
    """ECL_CRYPTO_LOCAL_MASTER_KEY as lower-case hex, checked; None when it is not set."""
    master = env.get("ECL_CRYPTO_LOCAL_MASTER_KEY")
    if master is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", master.strip()):
        raise ConfigError(
            "ECL_CRYPTO_LOCAL_MASTER_KEY: must be 64 hex characters (a 256-bit key); "
            "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return master.strip().lower()


def backend_overrides(
    backends: Mapping[str, Mapping[str, Any]], env: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Copies of the backend tables with the ECL_CRYPTO_* backend variables set over them."""
    merged = {name: dict(table) for name, table in backends.items()}
    for var, (table, name) in _BACKEND_ENV.items():
        if env.get(var):
            merged.setdefault(table, {})[name] = env[var]
    return merged
