"""The key store of this start, its root key and the local keyring over them (composition root).

`[keystore] kind = "file"` keeps the keyring in one file in the state dir and the root key
beside it (master.key, master.key.wrapped or ECL_CRYPTO_LOCAL_MASTER_KEY). `kind = "postgres"`
shares both with every daemon on the database: the root key is kept there wrapped by the KMS
key `[keyring] master_key_uri` (or given as ECL_CRYPTO_LOCAL_MASTER_KEY for development), and
changes other daemons commit arrive through `watch`. Nothing is opened until first asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from broker.daemon.root_key import RootKey
from broker.errors import BrokerError
from broker.keystore.file import FileKeyStore
from broker.kms.local.keyring import Keyring

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker.config import Config
    from broker.keystore.base import KeyStore, SharedKeyStore

__all__ = ["LocalKeys", "open_keystore"]

log = structlog.get_logger("keybroker")


def keyring_path(cfg: Config) -> Path:
    """Where the file store keeps the keyring: `[keystore] path`, else STATE_DIR/keyring.json."""
    path = cfg.keystore.path
    return Path(path) if path else cfg.server.state_dir / "keyring.json"


def open_keystore(cfg: Config, kind: str | None = None) -> KeyStore:
    """Open the configured store (or the one named by `kind`, for copies between stores)."""
    kind = kind or cfg.keystore.kind
    if kind == "file":
        path = keyring_path(cfg)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o750, parents=True)
        return FileKeyStore.open(path)
    from broker.keystore.postgres import (  # noqa: PLC0415 - only fleets need the driver
        PostgresKeyStore,
        postgres_settings,
    )

    return PostgresKeyStore.open(postgres_settings(cfg.keystore.postgres))


class LocalKeys:
    """The store, root key and keyring of one daemon, each opened once on first use."""

    def __init__(self, cfg: Config, *, create_root: bool = True) -> None:
        """Open nothing yet: a daemon serving only KMS keys may never need a store."""
        self._cfg = cfg
        self._store: KeyStore | None = None
        self._keyring: Keyring | None = None
        self.root_key = RootKey(cfg, self.store, create=create_root)
        self.changes_received = 0

    def store(self) -> KeyStore:
        """The key store (opened on first use)."""
        if self._store is None:
            self._store = open_keystore(self._cfg)
            log.info("keystore_opened", kind=self._store.kind, where=self._store.where())
        return self._store

    def keyring(self) -> Keyring:
        """The local backend's keyring over the store, bound to the root key."""
        if self._keyring is None:
            self._keyring = Keyring(self.store(), self.root_key())
        return self._keyring

    @property
    def opened(self) -> KeyStore | None:
        """The store when something has opened it (None for a daemon without local keys)."""
        return self._store

    @property
    def shared(self) -> SharedKeyStore | None:
        """The store when other daemons share it (and so may change keys under us)."""
        store = self._store
        return store if store is not None and store.kind != "file" else None  # type: ignore[return-value]

    @property
    def available(self) -> bool:
        """Whether the store answered its last contact (a file store always counts as up)."""
        shared = self.shared
        return True if shared is None else shared.available

    async def watch(
        self, on_change: Callable[[str], None], on_state: Callable[[bool], Awaitable[None]]
    ) -> None:
        """Take in changes other daemons commit and report the store's state, until cancelled."""
        shared = self.shared
        if shared is None or self._keyring is None:
            return
        interval = float(self._cfg.keystore.postgres.get("poll_seconds", 1.0))
        keyring = self._keyring
        up = True
        while True:
            await asyncio.to_thread(shared.wait_for_change, interval)
            try:
                changed = await asyncio.to_thread(keyring.refresh)
            except BrokerError:
                changed = set()
                await asyncio.sleep(interval)
            if shared.available != up:
                up = shared.available
                log.warning("keystore_state", available=up, where=shared.where())
                await on_state(up)
            for name in sorted(changed):
                log.info("keystore_key_changed", key=name)
                self.changes_received += 1
                on_change(name)

    def close(self) -> None:
        """Release the store's files or connections."""
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None
