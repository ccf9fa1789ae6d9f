"""What a database failure means to a caller: retry later, or an operator must act.

Callers get fixed sentences ending in "no change was made"; the SQLSTATE and the server's
text go to the log. Nothing here ever includes the DSN (psycopg's messages do not carry it).
"""

from __future__ import annotations

from typing import Final

import structlog

from broker.errors import KeyStoreError, KeyStoreReadOnlyError, KeyStoreUnavailableError
from broker.keystore.postgres._sdk import sdk

__all__ = ["UNREACHABLE", "is_unreachable", "store_error"]

log = structlog.get_logger("keybroker")

UNREACHABLE: Final = "key store unavailable (database unreachable); no change was made"
_BUSY: Final = "key store unavailable (database busy or timed out); no change was made"
_FAILED: Final = "key store unavailable (database error); no change was made"
# SQLSTATE -> what the caller is told; each needs an operator (FAILED_PRECONDITION)
_REFUSED: Final = {
    "25006": "the key store's database is read-only",  # read_only_sql_transaction, hot standby
    "53100": "the key store's database disk is full",  # disk_full
}
# admin_shutdown, crash_shutdown, cannot_connect_now: the server is going or not yet there
_GOING_AWAY: Final = frozenset({"57P01", "57P02", "57P03"})


def is_unreachable(exc: BaseException) -> bool:
    """Whether the database could not be reached at all (rather than refusing one statement)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        # no answer from a server: a refused or lost connection, or the pool's wait timing out
        return isinstance(exc, sdk().psycopg.OperationalError)
    return str(sqlstate).startswith("08") or sqlstate in _GOING_AWAY


def store_error(exc: BaseException, where: str, operation: str) -> KeyStoreError:
    """The caller-facing error for a failed database call; the detail goes to the log."""
    sqlstate = getattr(exc, "sqlstate", None)
    unreachable = is_unreachable(exc)
    # an outage is expected to repeat on every call until it ends: a warning, not an error
    report = log.warning if unreachable else log.error
    report(
        "keystore_database_error",
        where=where,
        operation=operation,
        sqlstate=sqlstate,
        error=type(exc).__name__,
        detail=str(exc).splitlines()[0] if str(exc) else "",
    )
    refused = _REFUSED.get(str(sqlstate))
    if refused is not None:
        return KeyStoreReadOnlyError(f"{refused}; no change was made")
    if unreachable:
        return KeyStoreUnavailableError(UNREACHABLE)
    if isinstance(exc, sdk().psycopg.OperationalError):
        return KeyStoreUnavailableError(_BUSY)
    return KeyStoreUnavailableError(_FAILED)
