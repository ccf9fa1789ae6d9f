"""The statements the store runs and how their rows become `StoredKey`s (schema.py has the DDL).

Revisions order changes for `changes(since)`: a reader that saw revision r must never later
find a change numbered below r. Sequence values are handed out before commit, in an order
commits need not follow, so a change takes its revision under a transaction-scoped advisory
lock held until it commits: revisions then become visible in the order they were given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, cast

from broker.keystore.base import StoredKey, StoredVersion

if TYPE_CHECKING:
    from collections.abc import Iterable

    from psycopg import Connection
    from psycopg.rows import TupleRow

    from broker.keystore.base import VersionState

__all__ = [
    "copy_version",
    "fetch_key",
    "fetch_keys",
    "insert_key",
    "insert_version",
    "lock_key",
    "make_current",
    "next_revision",
    "notify",
    "read_meta",
    "set_state",
    "write_meta_once",
]

_SELECT: Final = """
SELECT k.name, k.key_type, k.current_version, k.revision, v.version, v.state, v.created, v.sealed
FROM keybroker_keys k JOIN keybroker_key_versions v ON v.name = k.name
"""
_ALL: Final = _SELECT + "ORDER BY k.name, v.version"
_SINCE: Final = _SELECT + "WHERE k.revision > %s ORDER BY k.name, v.version"
_ONE: Final = _SELECT + "WHERE k.name = %s ORDER BY v.version"
_REVISION_LOCK: Final = 0x6B62_7265_7669_7369  # "kbrevisi": taken by every change, until commit


def _keys_from_rows(rows: Iterable[TupleRow]) -> tuple[int, dict[str, StoredKey]]:
    """The highest revision among the rows, and the keys they describe (one row per version)."""
    heads: dict[str, tuple[str, int]] = {}
    versions: dict[str, dict[int, StoredVersion]] = {}
    revision = 0
    for name, key_type, current, key_revision, number, state, created, sealed in rows:
        heads[name] = (key_type, current)
        stored = StoredVersion(number, cast("VersionState", state), created, bytes(sealed))
        versions.setdefault(name, {})[number] = stored
        revision = max(revision, key_revision)
    keys = {n: StoredKey(n, t, c, versions[n]) for n, (t, c) in heads.items()}
    return revision, keys


def fetch_keys(conn: Connection[TupleRow], since: int | None) -> tuple[int, dict[str, StoredKey]]:
    """Every key (or those changed after revision `since`), read in one statement's snapshot."""
    cursor = conn.execute(_ALL) if since is None else conn.execute(_SINCE, (since,))
    return _keys_from_rows(cursor.fetchall())


def fetch_key(conn: Connection[TupleRow], name: str) -> StoredKey | None:
    """One key as committed, or None when there is no key of that name."""
    _, keys = _keys_from_rows(conn.execute(_ONE, (name,)).fetchall())
    return keys.get(name)


def lock_key(conn: Connection[TupleRow], name: str) -> bool:
    """Lock the key's row until commit; False when there is no such key.

    Read the key again after this: a statement that waited for the lock still sees the
    versions as of its start.
    """
    row = conn.execute("SELECT 1 FROM keybroker_keys WHERE name = %s FOR UPDATE", (name,))
    return row.fetchone() is not None


def next_revision(conn: Connection[TupleRow]) -> int:
    """A revision for this change, taken under the lock that makes revisions commit in order."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REVISION_LOCK,))
    row = conn.execute("SELECT nextval('keybroker_revision')").fetchone()
    if row is None:
        msg = "nextval returned no row"
        raise RuntimeError(msg)
    return int(row[0])


def insert_key(
    conn: Connection[TupleRow], name: str, key_type: str, current: int, revision: int
) -> bool:
    """Add the key's row; False when another writer added it first.

    The current version's row must be inserted before commit (a deferred foreign key).
    """
    row = conn.execute(
        "INSERT INTO keybroker_keys (name, key_type, current_version, revision, created) "
        "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (name) DO NOTHING RETURNING name",
        (name, key_type, current, revision),
    )
    return row.fetchone() is not None


def insert_version(conn: Connection[TupleRow], name: str, version: int, sealed: bytes) -> None:
    """Add a new version: enabled, created now."""
    conn.execute(
        "INSERT INTO keybroker_key_versions (name, version, state, created, sealed) "
        "VALUES (%s, %s, 'enabled', now(), %s)",
        (name, version, sealed),
    )


def copy_version(conn: Connection[TupleRow], name: str, stored: StoredVersion) -> None:
    """Add a version copied from another store, keeping its state and creation time."""
    conn.execute(
        "INSERT INTO keybroker_key_versions (name, version, state, created, sealed) "
        "VALUES (%s, %s, %s, %s, %s)",
        (name, stored.version, stored.state, stored.created, stored.sealed),
    )


def make_current(conn: Connection[TupleRow], name: str, version: int, revision: int) -> None:
    """Point the key at `version` and stamp it with this change's revision."""
    conn.execute(
        "UPDATE keybroker_keys SET current_version = %s, revision = %s WHERE name = %s",
        (version, revision, name),
    )


def set_state(
    conn: Connection[TupleRow], name: str, version: int, state: VersionState, revision: int
) -> None:
    """Change one version's state and stamp its key with this change's revision."""
    conn.execute(
        "UPDATE keybroker_key_versions SET state = %s WHERE name = %s AND version = %s",
        (state, name, version),
    )
    conn.execute("UPDATE keybroker_keys SET revision = %s WHERE name = %s", (revision, name))


def notify(conn: Connection[TupleRow], name: str) -> None:
    """Announce the key's change to every listening daemon (delivered at commit)."""
    conn.execute("SELECT pg_notify('keybroker_keys', %s)", (name,))


def read_meta(conn: Connection[TupleRow], name: str) -> str | None:
    """A stored store-wide value (the root check value, the wrapped root key), or None."""
    row = conn.execute("SELECT value FROM keybroker_meta WHERE name = %s", (name,)).fetchone()
    return None if row is None else str(row[0])


def write_meta_once(conn: Connection[TupleRow], name: str, value: str) -> str:
    """Keep `value` unless one is stored already; returns the one kept (first writer wins).

    Reads first, so a value already there is returned even by a read-only database.
    """
    stored = read_meta(conn, name)
    if stored is not None:
        return stored
    conn.execute(
        "INSERT INTO keybroker_meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        (name, value),
    )
    kept = read_meta(conn, name)
    return value if kept is None else kept
