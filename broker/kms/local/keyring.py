"""The local backend's view of its key store: versioned material sealed under the root key.

Each version's material is AES-256-GCM sealed under the root key with the key name, version
and type as associated data, so stored entries cannot be swapped. A check value (HMAC of a
fixed label under the root key) tells at start whether the configured root key is the one the
store was made with.

Durable before visible: a change is sealed, committed to the `KeyStore`, and only the key the
store returns enters this view; a store that refuses the change raises and the view is as
before. Changes other daemons commit to a shared store arrive through `refresh()`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import ConfigError
from broker.keystore.file import FileKeyStore, require_private, write_private

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from pathlib import Path

    from broker.keystore.base import KeyStore, Sealer, StoredKey, VersionState

__all__ = [
    "Keyring",
    "VersionMeta",
    "check_value",
    "load_root_key",
    "require_private",
    "write_private",
]

_CHECK_INFO = b"keybroker/keyring/check/v1"
_NONCE = 12


@dataclass(frozen=True, slots=True)
class VersionMeta:
    """Metadata of one key version (no material)."""

    version: int
    enabled: bool
    created: datetime


def load_root_key(state_dir: Path, master_key_hex: str | None) -> bytes:
    """Return the root key from configuration, or from `master.key`, creating it on first start."""
    if master_key_hex is not None:
        return bytes.fromhex(master_key_hex)
    path = state_dir / "master.key"
    if path.exists():
        require_private(path)
        text = path.read_text(encoding="ascii").strip()
        if len(text) != 64:  # noqa: PLR2004 - 32 bytes in hex
            raise ConfigError(f"{path}: not a 64-hex-character master key; restore it from backup")
        return bytes.fromhex(text)
    key = os.urandom(32)
    write_private(path, key.hex().encode("ascii") + b"\n")
    return key


def check_value(root_key: bytes) -> str:
    """The value a store records to recognise its root key (reveals nothing about the key)."""
    return hmac.new(root_key, _CHECK_INFO, hashlib.sha256).hexdigest()


def _aad(name: str, version: int, key_type: str) -> bytes:
    n, t = name.encode(), key_type.encode()
    return (
        b"keybroker/keyring/v1"
        + struct.pack(">B", len(n))
        + n
        + struct.pack(">IB", version, len(t))
        + t
    )


class Keyring:
    """Versioned key material for the local backend, kept durably by a `KeyStore`."""

    def __init__(self, store: KeyStore, root_key: bytes) -> None:
        """Bind the store to this root key (refusing another) and load every key."""
        self._store = store
        self._root = AESGCM(root_key)
        store.bind_root(check_value(root_key))
        snapshot = store.load()
        self._keys: dict[str, StoredKey] = dict(snapshot.keys)
        self._revision = snapshot.revision
        self._write = threading.Lock()

    @classmethod
    def open(cls, path: Path, root_key: bytes) -> Keyring:
        """A keyring kept in one file (the embedded store), created when absent."""
        return cls(FileKeyStore.open(path), root_key)

    @property
    def store(self) -> KeyStore:
        """The store this view commits to."""
        return self._store

    def names(self) -> list[str]:
        """Key names in the keyring."""
        return sorted(self._keys)

    def key_type(self, name: str) -> str | None:
        """The key's type, or None when the keyring has no such key."""
        key = self._keys.get(name)
        return None if key is None else key.key_type

    def _sealer(self, name: str, key_type: str, material: bytes) -> Sealer:
        """Seal `material` for whichever version number the store allocates."""

        def seal(version: int) -> bytes:
            nonce = os.urandom(_NONCE)
            return nonce + self._root.encrypt(nonce, material, _aad(name, version, key_type))

        return seal

    def create(self, name: str, key_type: str, material: bytes) -> StoredKey:
        """Commit a new key with version 1 (or find the one another daemon committed first)."""
        with self._write:
            key = self._store.create_key(name, key_type, self._sealer(name, key_type, material))
            self._keys[name] = key
            return key

    def add_version(self, name: str, material: bytes) -> int:
        """Commit new material as the key's next (and current) version; returns the current one.

        When another daemon sharing the store rotated the key since this view last saw it,
        its version stands and no second one is made.
        """
        with self._write:
            key = self._keys[name]
            seal = self._sealer(name, key.key_type, material)
            stored = self._store.add_version(name, expected_current=key.current, seal=seal)
            self._keys[name] = stored
            return stored.current

    def current_version(self, name: str) -> int:
        """The version new operations use."""
        return self._keys[name].current

    def versions(self, name: str) -> list[VersionMeta]:
        """All versions, oldest first."""
        stored = self._keys[name].versions
        return [
            VersionMeta(v.version, v.state == "enabled", v.created)
            for _, v in sorted(stored.items())
        ]

    def material(self, name: str, version: int) -> bytearray | None:
        """Decrypted material of one version, or None when that version does not exist."""
        key = self._keys.get(name)
        if key is None or version not in key.versions:
            return None
        return self._open(key, version)

    def is_enabled(self, name: str, version: int) -> bool:
        """Whether a version exists and is enabled."""
        stored = self._keys[name].versions.get(version)
        return stored is not None and stored.state == "enabled"

    def set_enabled(self, name: str, version: int, *, enabled: bool) -> VersionMeta | None:
        """Commit a version's new state; None when it does not exist."""
        with self._write:
            if version not in self._keys[name].versions:
                return None
            state: VersionState = "enabled" if enabled else "disabled"
            stored = self._store.set_state(name, version, state)
            self._keys[name] = stored
            meta = stored.versions[version]
            return VersionMeta(version, meta.state == "enabled", meta.created)

    def refresh(self, on_change: Callable[[str], None] | None = None) -> set[str]:
        """Take in what other daemons committed; returns (and reports) the keys that changed."""
        snapshot = self._store.changes(self._revision)
        if snapshot is None:
            return set()
        changed: set[str] = set()
        with self._write:
            for name, key in snapshot.keys.items():
                if self._keys.get(name) != key:
                    self._keys[name] = key
                    changed.add(name)
            self._revision = max(self._revision, snapshot.revision)
        for name in sorted(changed):
            if on_change is not None:
                on_change(name)
        return changed

    def copy_to(self, other: Keyring, name: str) -> bool:
        """Copy a key with every version into another keyring, resealed under its root key.

        Returns False when the other store already holds the key with the same material;
        refuses (ConfigError) a key of that name with other material: nothing is overwritten.
        """
        key = self._keys[name]
        versions = {}
        for number, stored in key.versions.items():
            material = self._open(key, number)
            try:
                sealed = other._sealer(name, key.key_type, bytes(material))(number)
            finally:
                material[:] = bytes(len(material))
            versions[number] = replace(stored, sealed=sealed)
        with other._write:
            kept = other.store.put_key(replace(key, versions=versions))
            other._keys[name] = kept
        if kept.versions == versions:
            return True
        if kept.key_type == key.key_type and kept.versions.keys() == versions.keys():
            same = all(other._open(kept, n) == self._open(key, n) for n in versions)
            if same:
                return False
        msg = f"key {name!r} exists in {other.store.where()} with other material; not copied"
        raise ConfigError(msg)

    def _open(self, key: StoredKey, version: int) -> bytearray:
        """The material of one stored version, unsealed with this keyring's root key."""
        sealed = key.versions[version].sealed
        aad = _aad(key.name, version, key.key_type)
        return bytearray(self._root.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad))
