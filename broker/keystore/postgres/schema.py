"""The key store's tables, versioned: created by `init`, upgraded by `migrate`, checked at open.

`MIGRATIONS[n - 1]` turns schema version n - 1 into version n; a release only ever appends.
`keybroker_schema_version` holds one row per applied version. Each migration runs in its own
transaction holding an advisory lock, so daemons and CLIs starting together never migrate at
once, and one that waited finds the work done. A daemon refuses a database without the
schema, with an older one (run `keybroker keystore migrate`) or a newer one (upgrade first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar

import structlog

from broker.errors import ConfigError
from broker.keystore.postgres._sdk import sdk
from broker.keystore.postgres.connection import connect_or_refuse, unreachable_at_start
from broker.keystore.postgres.errors import store_error
from broker.keystore.postgres.settings import describe_location

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg import Connection
    from psycopg.rows import TupleRow

    from broker.keystore.postgres.settings import PostgresSettings

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "check_schema", "init_schema", "migrate_schema"]

log = structlog.get_logger("keybroker")

_V1: Final = """
CREATE TABLE keybroker_keys (
    name text PRIMARY KEY,
    key_type text NOT NULL,
    current_version integer NOT NULL CHECK (current_version > 0),
    revision bigint NOT NULL,
    created timestamptz NOT NULL
);
CREATE INDEX keybroker_keys_revision ON keybroker_keys (revision);
CREATE TABLE keybroker_key_versions (
    name text NOT NULL REFERENCES keybroker_keys (name),
    version integer NOT NULL CHECK (version > 0),
    state text NOT NULL CHECK (state IN ('enabled', 'disabled')),
    created timestamptz NOT NULL,
    sealed bytea NOT NULL,
    PRIMARY KEY (name, version)
);
ALTER TABLE keybroker_keys ADD FOREIGN KEY (name, current_version)
    REFERENCES keybroker_key_versions (name, version) DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE keybroker_meta (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE SEQUENCE keybroker_revision AS bigint;
"""

MIGRATIONS: Final[tuple[str, ...]] = (_V1,)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS keybroker_schema_version (
    version integer PRIMARY KEY,
    applied timestamptz NOT NULL DEFAULT now()
)
"""
_T = TypeVar("_T")
_SCHEMA_LOCK: Final = 0x6B62_7363_6865_6D61  # "kbschema": one lock for every migrating process


def current_version(conn: Connection[TupleRow]) -> int | None:
    """The schema version in the database, or None when it has no key store schema."""
    exists = conn.execute("SELECT to_regclass('keybroker_schema_version')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute("SELECT max(version) FROM keybroker_schema_version").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def check_schema(conn: Connection[TupleRow], where: str) -> int:
    """The schema version, when this release can use it; else a one-line ConfigError."""
    try:
        version = current_version(conn)
    except sdk().psycopg.Error as exc:
        raise unreachable_at_start(exc, where) from None
    if version is None:
        msg = f"{where}: the database has no key store schema; run `keybroker keystore init`"
        raise ConfigError(msg)
    _refuse_newer(version, where)
    if version < SCHEMA_VERSION:
        raise ConfigError(
            f"{where}: the key store schema is version {version}; run "
            f"`keybroker keystore migrate` to bring it to version {SCHEMA_VERSION}"
        )
    return version


def init_schema(settings: PostgresSettings) -> tuple[int, str]:
    """Create the schema in an empty database (a no-op when current): (version, where)."""
    params = settings.parameters()
    where = describe_location(params)
    with connect_or_refuse(params, where) as conn:
        version = _contact(conn, where, "init", current_version)
        if version is not None and version != SCHEMA_VERSION:
            check_schema(conn, where)  # refuses, saying what to do instead
        return _contact(conn, where, "init", _upgrade), where


def migrate_schema(settings: PostgresSettings) -> tuple[int, str]:
    """Apply the pending migrations to an initialised database: (version, where)."""
    params = settings.parameters()
    where = describe_location(params)
    with connect_or_refuse(params, where) as conn:
        version = _contact(conn, where, "migrate", current_version)
        if version is None:
            check_schema(conn, where)  # refuses: nothing to migrate yet, run init
        else:
            _refuse_newer(version, where)
        return _contact(conn, where, "migrate", _upgrade), where


def _upgrade(conn: Connection[TupleRow]) -> int:
    """Apply every migration the database lacks, each in its own locked transaction."""
    for number, script in enumerate(MIGRATIONS, start=1):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_VERSION_TABLE)
            applied = current_version(conn) or 0
            if applied >= number:
                continue
            conn.execute(script)
            conn.execute("INSERT INTO keybroker_schema_version (version) VALUES (%s)", (number,))
        log.info("keystore_schema_migrated", version=number)
    return SCHEMA_VERSION


def _refuse_newer(version: int, where: str) -> None:
    """Refuse a schema a later release made: this one cannot know what it means."""
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{where}: the key store schema is version {version}; this keybroker supports up "
            f"to {SCHEMA_VERSION}: upgrade keybroker"
        )


def _contact(
    conn: Connection[TupleRow],
    where: str,
    command: str,
    step: Callable[[Connection[TupleRow]], _T],
) -> _T:
    """Run one step of a schema command; a database failure becomes a one-line ConfigError."""
    try:
        return step(conn)
    except sdk().psycopg.Error as exc:
        error = store_error(exc, where, f"schema {command}")
        raise ConfigError(f"{where}: `keybroker keystore {command}` failed: {error}") from None
