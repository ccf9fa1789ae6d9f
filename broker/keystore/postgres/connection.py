"""Connections to the key store's database: single ones for setup and LISTEN, and the pool.

At start an unreachable database is a configuration problem (the daemon exits 2 naming
host:port/dbname); once running, the pool's waits are bounded by the settings, so an outage
shows up as a retryable error within seconds and the pool reconnects by itself afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from broker.errors import ConfigError
from broker.keystore.postgres._sdk import sdk

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psycopg import Connection
    from psycopg.rows import TupleRow
    from psycopg_pool import ConnectionPool

    from broker.keystore.postgres.settings import PostgresSettings

__all__ = ["connect", "connect_or_refuse", "open_pool", "unreachable_at_start"]

log = structlog.get_logger("keybroker")


def connect(params: Mapping[str, str]) -> Connection[TupleRow]:
    """A new autocommit connection; psycopg's errors propagate."""
    conn: Connection[TupleRow] = sdk().psycopg.connect(**params, autocommit=True)
    return conn


def unreachable_at_start(exc: BaseException, where: str) -> ConfigError:
    """The one-line refusal to start for a database that cannot be reached (detail in the log)."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    log.error("keystore_connect_failed", where=where, error=type(exc).__name__, detail=detail)
    return ConfigError(
        f"{where}: cannot connect to the key store database (unreachable, or the credentials "
        "were refused); check keystore.dsn and that PostgreSQL accepts connections there"
    )


def connect_or_refuse(params: Mapping[str, str], where: str) -> Connection[TupleRow]:
    """A new autocommit connection, or a ConfigError naming where the database should be."""
    try:
        return connect(params)
    except sdk().psycopg.Error as exc:
        raise unreachable_at_start(exc, where) from None


def open_pool(
    params: Mapping[str, str], settings: PostgresSettings, where: str
) -> ConnectionPool[Connection[TupleRow]]:
    """An open pool of autocommit connections, each checked before use (servers restart)."""
    psycopg, conninfo, pool_module = sdk()
    pool: ConnectionPool[Connection[TupleRow]] = pool_module.ConnectionPool(
        conninfo.make_conninfo("", **params),
        kwargs={"autocommit": True},  # reads are single statements; changes open transactions
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        open=False,
        check=pool_module.ConnectionPool.check_connection,
        name="keybroker-keystore",
        timeout=settings.connect_timeout,
        # Give up background reconnects quickly: the next caller starts a fresh attempt, so a
        # restarted server is used at once rather than after a long backoff.
        reconnect_timeout=settings.connect_timeout,
    )
    try:
        pool.open(wait=True, timeout=settings.connect_timeout)
    except psycopg.Error as exc:
        pool.close()
        raise unreachable_at_start(exc, where) from None
    return pool
