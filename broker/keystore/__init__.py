"""The durable key store: where key versions live before anything may use them.

`file` is the embedded default (one JSON file, written atomically); `postgres` lets a fleet
of daemons share keys. Both implement `KeyStore` (keystore/base.py).
"""

from broker.keystore.base import (
    KeyStore,
    Sealer,
    Snapshot,
    StoredKey,
    StoredVersion,
    VersionState,
)

__all__ = ["KeyStore", "Sealer", "Snapshot", "StoredKey", "StoredVersion", "VersionState"]
