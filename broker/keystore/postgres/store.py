"""The PostgreSQL key store: one database a fleet of daemons shares.

Every change is one transaction: lock the key's row, compute from the rows as stored (so a
rotation another daemon committed first is seen, and version numbers come from what exists),
write, take a revision, NOTIFY, commit; only then is the key returned. Concurrent rotations
from the same view therefore make one version, and a failed commit leaves nothing behind.

Reads run on pooled autocommit connections; a dedicated connection LISTENs for changes (see
listener.py). When the database is unreachable every call fails fast with a retryable
KeyStoreUnavailableError and `available` turns False; the daemon keeps serving the keys it
already holds, and the same store object resumes once the database is back.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
from typing import TYPE_CHECKING, Final

from broker.errors import ConfigError
from broker.keystore.base import VERSION_STATES, RootRecord, Snapshot, StoredKey
from broker.keystore.postgres import tables
from broker.keystore.postgres._sdk import sdk
from broker.keystore.postgres.connection import connect_or_refuse, open_pool
from broker.keystore.postgres.errors import is_unreachable, store_error
from broker.keystore.postgres.listener import ChangeListener
from broker.keystore.postgres.schema import check_schema
from broker.keystore.postgres.settings import describe_location

if TYPE_CHECKING:
    from collections.abc import Iterator

    from psycopg import Connection
    from psycopg.rows import TupleRow
    from psycopg_pool import ConnectionPool

    from broker.keystore.base import Sealer, VersionState
    from broker.keystore.postgres.settings import PostgresSettings

__all__ = ["PostgresKeyStore"]

_CHECK: Final = "root_check"
_ROOT: Final = "root_key"


class PostgresKeyStore:
    """SharedKeyStore over a PostgreSQL database; safe to use from several threads."""

    kind = "postgres"

    def __init__(
        self,
        pool: ConnectionPool[Connection[TupleRow]],
        listener: ChangeListener,
        where: str,
        poll_seconds: float,
    ) -> None:
        """Use `PostgresKeyStore.open`; this constructor takes already-open connections."""
        self._pool = pool
        self._listener = listener
        self._where = where
        self._poll_seconds = poll_seconds
        self._available = True

    @classmethod
    def open(cls, settings: PostgresSettings) -> PostgresKeyStore:
        """Connect and check the schema; an unreachable or unprepared database is a ConfigError."""
        params = settings.parameters()
        where = describe_location(params)
        conn = connect_or_refuse(params, where)
        try:
            check_schema(conn, where)
            listener = ChangeListener(params, where, conn)
            pool = open_pool(params, settings, where)
        except BaseException:
            conn.close()
            raise
        return cls(pool, listener, where, settings.poll_seconds)

    @property
    def available(self) -> bool:
        """Whether the last contact with the database succeeded."""
        return self._available

    def where(self) -> str:
        """host:port/dbname of the database."""
        return self._where

    def bind_root(self, check: str) -> None:
        """Record the check value on first use; refuse a root key the store was not made with."""
        with self._transaction("bind_root") as conn:
            stored = tables.write_meta_once(conn, _CHECK, check)
        if not hmac.compare_digest(stored.encode(), check.encode()):
            raise ConfigError(
                f"{self._where}: the configured root key is not the one this key store was "
                "created with"
            )

    def read_root(self) -> RootRecord | None:
        """The wrapped root key, or None before the first daemon stored one."""
        with self._reading("read_root") as conn:
            stored = tables.read_meta(conn, _ROOT)
        return None if stored is None else self._root_from_json(stored)

    def create_root(self, record: RootRecord) -> RootRecord:
        """Keep `record` unless a root exists already; returns the one kept."""
        encoded = json.dumps(
            {
                "uri": record.uri,
                "key_version": record.key_version,
                "wrapped": base64.b64encode(record.wrapped).decode("ascii"),
            }
        )
        with self._transaction("create_root") as conn:
            stored = tables.write_meta_once(conn, _ROOT, encoded)
        return self._root_from_json(stored)

    def load(self) -> Snapshot:
        """Every key as committed now."""
        with self._reading("load") as conn:
            revision, keys = tables.fetch_keys(conn, since=None)
        return Snapshot(revision, keys)

    def changes(self, since: int) -> Snapshot | None:
        """Keys whose last change has a revision above `since`; None when there are none."""
        with self._reading("changes") as conn:
            revision, keys = tables.fetch_keys(conn, since=since)
        return Snapshot(revision, keys) if keys else None

    def create_key(self, name: str, key_type: str, seal: Sealer) -> StoredKey:
        """Commit a new key with version 1, or return the key another writer made first."""
        with self._transaction("create_key") as conn:
            existing = tables.fetch_key(conn, name)
            if existing is not None:
                return existing
            revision = tables.next_revision(conn)
            if tables.insert_key(conn, name, key_type, 1, revision):
                tables.insert_version(conn, name, 1, seal(1))
                tables.notify(conn, name)
            return self._stored(conn, name)

    def put_key(self, key: StoredKey) -> StoredKey:
        """Commit a whole key (a copy from another store), or return the one already stored."""
        if key.current not in key.versions:
            msg = f"key {key.name!r}: current version {key.current} is not among its versions"
            raise ValueError(msg)
        with self._transaction("put_key") as conn:
            existing = tables.fetch_key(conn, key.name)
            if existing is not None:
                return existing
            revision = tables.next_revision(conn)
            if tables.insert_key(conn, key.name, key.key_type, key.current, revision):
                for version in key.versions.values():
                    tables.copy_version(conn, key.name, version)
                tables.notify(conn, key.name)
            return self._stored(conn, key.name)

    def add_version(self, name: str, *, expected_current: int, seal: Sealer) -> StoredKey:
        """Commit a new current version, unless the key has moved past `expected_current`."""
        with self._transaction("add_version") as conn:
            key = self._locked(conn, name)
            if key.current != expected_current:
                return key
            number = key.next_version()
            sealed = seal(number)
            revision = tables.next_revision(conn)
            tables.insert_version(conn, name, number, sealed)
            tables.make_current(conn, name, number, revision)
            tables.notify(conn, name)
            return self._stored(conn, name)

    def set_state(self, name: str, version: int, state: VersionState) -> StoredKey:
        """Commit one version's new state; KeyError when the key or version does not exist."""
        if state not in VERSION_STATES:
            raise ValueError(state)
        with self._transaction("set_state") as conn:
            key = self._locked(conn, name)
            if key.versions[version].state == state:
                return key
            tables.set_state(conn, name, version, state, tables.next_revision(conn))
            tables.notify(conn, name)
            return self._stored(conn, name)

    def wait_for_change(self, timeout: float) -> None:
        """Block until a change is announced, or `timeout` (at most poll_seconds) passes."""
        if not self._listener.wait(min(timeout, self._poll_seconds)):
            self._available = False

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._listener.close()
        self._pool.close()

    @contextlib.contextmanager
    def _contact(self, operation: str) -> Iterator[None]:
        """Turn database failures into KeyStoreErrors, noting when the database is gone."""
        try:
            yield
        except sdk().psycopg.Error as exc:
            if is_unreachable(exc):
                self._available = False
            raise store_error(exc, self._where, operation) from exc

    @contextlib.contextmanager
    def _reading(self, operation: str) -> Iterator[Connection[TupleRow]]:
        """A pooled connection for single-statement reads."""
        with self._contact(operation), self._pool.connection() as conn:
            self._available = True
            yield conn

    @contextlib.contextmanager
    def _transaction(self, operation: str) -> Iterator[Connection[TupleRow]]:
        """A pooled connection inside one transaction, committed when the block ends cleanly."""
        with self._reading(operation) as conn, conn.transaction():
            yield conn

    def _locked(self, conn: Connection[TupleRow], name: str) -> StoredKey:
        """The key as stored, its row locked until commit; KeyError when there is none."""
        if not tables.lock_key(conn, name):
            raise KeyError(name)
        return self._stored(conn, name)

    def _stored(self, conn: Connection[TupleRow], name: str) -> StoredKey:
        """The key as this transaction sees it (it exists: the caller found or wrote it)."""
        key = tables.fetch_key(conn, name)
        if key is None:
            raise KeyError(name)
        return key

    def _root_from_json(self, stored: str) -> RootRecord:
        """Decode the stored root record; a damaged one is refused, naming the database."""
        try:
            raw = json.loads(stored)
            wrapped = base64.b64decode(raw["wrapped"], validate=True)
            return RootRecord(str(raw["uri"]), int(raw["key_version"]), wrapped)
        except (ValueError, KeyError, TypeError, binascii.Error):
            msg = f"{self._where}: the stored root key record is damaged; restore it from backup"
            raise ConfigError(msg) from None
