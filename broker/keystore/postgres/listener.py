"""The LISTEN side of change propagation: one dedicated connection waiting for NOTIFY.

Every committed key change notifies channel `keybroker_keys` with the key's name. A lost
notification costs at most one polling interval, because the caller asks the store for
changes after every wait, notified or not. When the connection breaks the listener drops
it and tries a new one on its next wait; until then waits simply sleep.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

import structlog

from broker.keystore.postgres._sdk import sdk
from broker.keystore.postgres.connection import connect, unreachable_at_start

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psycopg import Connection
    from psycopg.rows import TupleRow

__all__ = ["CHANNEL", "ChangeListener"]

log = structlog.get_logger("keybroker")

CHANNEL: Final = "keybroker_keys"
_LISTEN: Final = "LISTEN keybroker_keys"


class ChangeListener:
    """Waits for another daemon's change on a connection of its own, reconnecting as needed."""

    def __init__(
        self, params: Mapping[str, str], where: str, conn: Connection[TupleRow] | None
    ) -> None:
        """Listen on `conn` (an autocommit connection) when given, else connect on first wait.

        A database that refuses LISTEN on the first connection is a ConfigError, as at start.
        """
        self._params = params
        self._where = where
        self._conn: Connection[TupleRow] | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if conn is not None:
            try:
                conn.execute(_LISTEN)
            except sdk().psycopg.Error as exc:
                raise unreachable_at_start(exc, where) from None
            self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a notification; False when the database is gone.

        After a reconnect it returns at once: changes made while it was away were not
        announced to it, so the caller should look.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed.is_set():
                return True
            if self._conn is None or self._conn.closed:
                reached = self._reconnect()
                if not reached:
                    self._closed.wait(max(0.0, deadline - time.monotonic()))
                return reached
            try:
                for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                    pass
            except sdk().psycopg.Error as exc:
                self._drop(exc)
                self._closed.wait(max(0.0, deadline - time.monotonic()))
                return False
            return True

    def close(self) -> None:
        """Stop listening; a wait in progress ends within its timeout."""
        self._closed.set()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _reconnect(self) -> bool:
        """Open and LISTEN on a new connection; False (logged) when that fails."""
        conn = None
        try:
            conn = connect(self._params)
            conn.execute(_LISTEN)
        except sdk().psycopg.Error as exc:
            if conn is not None:
                conn.close()
            log.warning("keystore_listen_failed", where=self._where, error=type(exc).__name__)
            return False
        self._conn = conn
        log.info("keystore_listening", where=self._where)
        return True

    def _drop(self, exc: BaseException) -> None:
        """Forget a broken connection; the next wait makes a new one."""
        log.warning("keystore_listen_lost", where=self._where, error=type(exc).__name__)
        if self._conn is not None:
            self._conn.close()
        self._conn = None
