"""What a key store promises: every change durable before it is returned, numbers never reused.

A key store keeps, per key name, the key type and its versions; each version's material is
sealed (by the caller, under the root key, with name, version and type as associated data),
so a store never sees key material in clear. Every mutating method either commits the whole
change and returns the key as stored, or raises a `KeyStoreError` and changes nothing.
Version numbers are allocated by the store inside the commit, so a number once handed out is
never given to other material, across crashes and across daemons sharing one store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "KeyStore",
    "RootRecord",
    "Sealer",
    "SharedKeyStore",
    "Snapshot",
    "StoredKey",
    "StoredVersion",
    "VersionState",
]

VersionState = Literal["enabled", "disabled"]
VERSION_STATES: tuple[VersionState, ...] = ("enabled", "disabled")

# Seals new material for the version number the store allocated: version -> sealed bytes.
Sealer = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version as stored: its state, creation time and sealed material."""

    version: int
    state: VersionState
    created: datetime
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One key as stored: type, current version and every version by number."""

    name: str
    key_type: str
    current: int
    versions: Mapping[int, StoredVersion]

    def with_version(self, version: StoredVersion, *, current: bool) -> StoredKey:
        """A copy with one version added or replaced (and made current when asked)."""
        versions = {**self.versions, version.version: version}
        number = version.version if current else self.current
        return replace(self, versions=versions, current=number)

    def next_version(self) -> int:
        """The number the next version gets: one above every number ever used."""
        return max(self.versions, default=0) + 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Keys as of one store revision (a number that grows with every committed change)."""

    revision: int
    keys: Mapping[str, StoredKey]


@dataclass(frozen=True, slots=True)
class RootRecord:
    """The root key as a shared store keeps it: wrapped by a KMS key, never in clear."""

    uri: str
    key_version: int
    wrapped: bytes = field(repr=False)


class KeyStore(Protocol):
    """Durable storage of sealed key versions; methods block (run them off the event loop)."""

    kind: str

    def where(self) -> str:
        """Where the store is (a path, or a database host and name), never a secret."""
        ...

    def bind_root(self, check: str) -> None:
        """Record the root key's check value on first use; refuse another root key after."""
        ...

    def load(self) -> Snapshot:
        """Every key as committed now."""
        ...

    def changes(self, since: int) -> Snapshot | None:
        """Keys changed after revision `since` (None when nothing changed)."""
        ...

    def create_key(self, name: str, key_type: str, seal: Sealer) -> StoredKey:
        """Commit a new key with version 1, or return the key when it already exists."""
        ...

    def add_version(self, name: str, *, expected_current: int, seal: Sealer) -> StoredKey:
        """Commit a new current version unless the current one is no longer `expected_current`.

        When another writer already moved the key past `expected_current`, nothing is added and
        the key is returned as stored: concurrent rotations from one view make one version.
        """
        ...

    def set_state(self, name: str, version: int, state: VersionState) -> StoredKey:
        """Commit a version's new state; KeyError when the key or version does not exist."""
        ...

    def put_key(self, key: StoredKey) -> StoredKey:
        """Commit a whole key as given (a copy between stores), or return the one already stored."""
        ...

    def close(self) -> None:
        """Release files, connections and threads."""
        ...


class SharedKeyStore(KeyStore, Protocol):
    """A store several daemons share: it keeps the wrapped root key and announces changes."""

    def read_root(self) -> RootRecord | None:
        """The wrapped root key, or None before the first daemon made one."""
        ...

    def create_root(self, record: RootRecord) -> RootRecord:
        """Keep `record` unless a root exists already; returns the one kept (first writer wins)."""
        ...

    def wait_for_change(self, timeout: float) -> None:
        """Block until another daemon may have committed a change, or `timeout` seconds pass."""
        ...

    @property
    def available(self) -> bool:
        """Whether the last contact with the store succeeded (for health and metrics)."""
        ...
