"""Vault/OpenBao Transit (`vault-transit://MOUNT/NAME`); hvac comes with `keybroker[vault]`."""

from broker.kms.vault.backend import VaultTransitBackend, split_key_id
from broker.kms.vault.settings import DEFAULT_KUBERNETES_JWT_PATH, VaultSettings

__all__ = ["DEFAULT_KUBERNETES_JWT_PATH", "VaultSettings", "VaultTransitBackend", "split_key_id"]
