"""The embedded local backend: keys kept in the keyring file, sealed under the root key."""

from broker.kms.local.backend import KEY_TYPES, LOCAL_ALGORITHMS, LocalBackend, local_key_type

__all__ = ["KEY_TYPES", "LOCAL_ALGORITHMS", "LocalBackend", "local_key_type"]
