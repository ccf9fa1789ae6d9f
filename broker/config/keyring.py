"""The `[keyring]` section: where the local keyring's root key comes from.

By default the root key is ECL_CRYPTO_LOCAL_MASTER_KEY or STATE/master.key (created on first
start). `master_key_uri` names a KMS key instead, which wraps the root key so that only the
wrapped form is stored (broker/kms/local/root.py); it cannot be combined with the env key.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.errors import ConfigError
from broker.kms.registry import REMOTE_SCHEMES, describe_uris, uri_pattern

__all__ = ["KeyringConfig", "check_keyring"]

_REMOTE_URI = uri_pattern(REMOTE_SCHEMES)


@dataclass(frozen=True, slots=True)
class KeyringConfig:
    """The keyring root key's source; an empty URI keeps it in master.key or the env."""

    master_key_uri: str = ""


def check_keyring(keyring: KeyringConfig, master_key_hex: str | None) -> None:
    """Refuse a URI no KMS backend serves, and a root key given twice."""
    uri = keyring.master_key_uri
    if not uri:
        return
    if not _REMOTE_URI.match(uri):
        raise ConfigError(f"keyring.master_key_uri: expected {describe_uris(REMOTE_SCHEMES)}")
    if master_key_hex is not None:
        raise ConfigError(
            "keyring.master_key_uri: set either it or ECL_CRYPTO_LOCAL_MASTER_KEY, not both"
        )
