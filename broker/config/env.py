"""Which environment variable sets what: KEYBROKER_* overrides and the seed's ECL_CRYPTO_* names."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from broker.errors import ConfigError
from broker.kms.registry import BACKEND_TABLES, LOCAL_SCHEME

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["backend_overrides", "env_settings", "seed_key_uri", "seed_master_key"]

# environment variable -> (section, field); KEYBROKER_* first, then the seed names
_ENV: dict[str, tuple[str, str]] = {
    "KEYBROKER_SOCKET": ("server", "socket"),
    "KEYBROKER_STATE_DIR": ("server", "state_dir"),
    "KEYBROKER_GRACE_SECONDS": ("server", "grace_seconds"),
    "KEYBROKER_MAX_PLAINTEXT_BYTES": ("server", "max_plaintext_bytes"),
    "KEYBROKER_MAX_BATCH_ITEMS": ("server", "max_batch_items"),
    "KEYBROKER_LOG_LEVEL": ("logging", "level"),
    "KEYBROKER_LOG_FORMAT": ("logging", "format"),
    "KEYBROKER_METRICS_LISTEN": ("metrics", "listen"),
    "KEYBROKER_ALLOW_ROOT": ("server", "allow_root"),
    "KEYBROKER_AUDIT_ENABLED": ("audit", "enabled"),
    "KEYBROKER_AUDIT_FILE": ("audit", "file"),
    "KEYBROKER_AUDIT_STDOUT": ("audit", "stdout"),
    "KEYBROKER_AUDIT_FAIL_CLOSED": ("audit", "fail_closed"),
    "KEYBROKER_HASHING_MAX_CONCURRENT": ("hashing", "max_concurrent"),
    "KEYBROKER_HASHING_MEMORY_BUDGET_BYTES": ("hashing", "memory_budget_bytes"),
    "KEYBROKER_KEYRING_MASTER_KEY_URI": ("keyring", "master_key_uri"),
    "KEYBROKER_CACHE_ENABLED": ("cache", "enabled"),
    "KEYBROKER_CACHE_DECRYPT_MAX_ENTRIES": ("cache", "decrypt_max_entries"),
    "KEYBROKER_CACHE_DECRYPT_TTL_SECONDS": ("cache", "decrypt_ttl_seconds"),
    "KEYBROKER_CACHE_ENCRYPT_MAX_AGE_SECONDS": ("cache", "encrypt_max_age_seconds"),
    "KEYBROKER_CACHE_ENCRYPT_MAX_MESSAGES": ("cache", "encrypt_max_messages"),
    "KEYBROKER_CACHE_ENCRYPT_MAX_BYTES": ("cache", "encrypt_max_bytes"),
}
_SEED_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "ECL_CRYPTO_DEK_CACHE_ENABLED": (("cache", "enabled"),),
    "ECL_CRYPTO_DEK_CACHE_TTL": (
        ("cache", "decrypt_ttl_seconds"),
        ("cache", "encrypt_max_age_seconds"),
    ),
    "ECL_CRYPTO_DEK_CACHE_MAX_SIZE": (("cache", "decrypt_max_entries"),),
    "ECL_CRYPTO_DEK_CACHE_MAX_MESSAGES": (("cache", "encrypt_max_messages"),),
    "ECL_CRYPTO_DEK_CACHE_MAX_BYTES": (("cache", "encrypt_max_bytes"),),
}
# environment variable -> (backend table, field); applied over the config file too
_BACKEND_ENV: dict[str, tuple[str, str]] = {
    "ECL_CRYPTO_AWS_REGION": ("aws", "region"),
    "ECL_CRYPTO_AWS_ENDPOINT_URL": ("aws", "endpoint_url"),
    "ECL_CRYPTO_AWS_PROFILE": ("aws", "profile"),
    "ECL_CRYPTO_VAULT_ADDR": ("vault", "address"),
    "ECL_CRYPTO_VAULT_TOKEN": ("vault", "token"),
    "ECL_CRYPTO_VAULT_NAMESPACE": ("vault", "namespace"),
    "ECL_CRYPTO_GCP_CREDENTIALS_FILE": ("gcp", "credentials_file"),
    "ECL_CRYPTO_GCP_ENDPOINT": ("gcp", "endpoint"),
}
# ECL_CRYPTO_KMS_BACKEND value (`local` or a [backends.*] table name) -> its URI after the scheme
_SEED_KEY = {LOCAL_SCHEME: "{key}", "aws": "{key}", "vault": "{mount}/{key}", "gcp": "{key}"}


def seed_key_uri(env: Mapping[str, str]) -> str | None:
    """The URI of the key ECL_CRYPTO_KMS_KEY_ID names; None when no seed backend is set."""
    backend = env.get("ECL_CRYPTO_KMS_BACKEND", "").strip().lower()
    if not backend:
        return None
    if backend not in _SEED_KEY:
        raise ConfigError(
            f"ECL_CRYPTO_KMS_BACKEND: must be one of {', '.join(_SEED_KEY)} (got {backend!r})"
        )
    key_id = env.get("ECL_CRYPTO_KMS_KEY_ID", "").strip()
    if not key_id and backend != "local":
        raise ConfigError("ECL_CRYPTO_KMS_KEY_ID: required when ECL_CRYPTO_KMS_BACKEND is set")
    mount = env.get("ECL_CRYPTO_VAULT_MOUNT", "transit").strip("/")
    scheme = LOCAL_SCHEME if backend == LOCAL_SCHEME else BACKEND_TABLES[backend]
    return f"{scheme}://" + _SEED_KEY[backend].format(key=key_id or "default", mount=mount)


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
