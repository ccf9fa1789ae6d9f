"""The `[keyring]` section: where the local keyring's root key comes from.

By default the root key is ECL_CRYPTO_LOCAL_MASTER_KEY or STATE/master.key (created on first
start). `master_key_uri` names a KMS key instead, which wraps the root key so that only the
wrapped form is stored (broker/kms/local/root.py); it cannot be combined with the env key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.errors import ConfigError

__all__ = ["KeyringConfig", "check_keyring"]

_REMOTE_URI = re.compile(r"^(aws-kms|vault-transit|gcp-kms|pkcs11)://\S+$")


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
        raise ConfigError(
            "keyring.master_key_uri: expected aws-kms://…, vault-transit://MOUNT/NAME, "
            "gcp-kms://projects/… or pkcs11://TOKEN/LABEL"
        )
    if master_key_hex is not None:
        raise ConfigError(
            "keyring.master_key_uri: set either it or ECL_CRYPTO_LOCAL_MASTER_KEY, not both"
        )
