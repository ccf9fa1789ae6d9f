"""`[keystore]` for kind = "postgres": where the database is, how to reach it, how long to wait.

The DSN is a libpq connection string or URI; it may carry a password, so it is never shown
(not in repr, messages or logs): only `location()`, "host:port/dbname", is. TLS settings pass
straight to libpq and override the DSN's. Every wait is bounded here, so an unreachable
database is reported in seconds rather than after libpq's or the pool's defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Final

from broker.errors import ConfigError
from broker.keystore.file import require_private
from broker.keystore.postgres._sdk import sdk

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PostgresSettings", "describe_location", "postgres_settings"]

SSL_MODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TLS_FIELDS: Final = ("sslmode", "sslrootcert", "sslcert", "sslkey")
# An idle connection (the LISTEN one) learns of a vanished server within about 25 s.
_KEEPALIVES: Final = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
_MAX_SECONDS: Final = 3600
_MAX_POOL: Final = 100


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """How to reach the key store's database; exactly one of `dsn` and `dsn_file` is set."""

    dsn: str | None = field(default=None, repr=False)
    dsn_file: str | None = None
    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    pool_min_size: int = 1
    pool_max_size: int = 4
    connect_timeout: int = 3
    poll_seconds: float = 1.0
    statement_timeout: float = 5.0

    def __post_init__(self) -> None:
        """Reject settings that cannot work, naming the field."""
        if (self.dsn is None) == (self.dsn_file is None):
            raise ConfigError("keystore.dsn: set exactly one of keystore.dsn and keystore.dsn_file")
        for name in ("dsn", "dsn_file", *_TLS_FIELDS):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"keystore.{name} must be a non-empty string")
        if self.sslmode is not None and self.sslmode not in SSL_MODES:
            raise ConfigError(f"keystore.sslmode must be one of {', '.join(SSL_MODES)}")
        _require_number("pool_min_size", self.pool_min_size, minimum=0, maximum=_MAX_POOL)
        _require_number("pool_max_size", self.pool_max_size, minimum=1, maximum=_MAX_POOL)
        if self.pool_max_size < self.pool_min_size:
            raise ConfigError("keystore.pool_max_size must be at least keystore.pool_min_size")
        _require_number("connect_timeout", self.connect_timeout, minimum=1, maximum=_MAX_SECONDS)
        for name in ("poll_seconds", "statement_timeout"):
            _require_number(name, getattr(self, name), minimum=0.01, maximum=_MAX_SECONDS)

    def read_dsn(self) -> str:
        """The DSN, from the settings or from `dsn_file` (which only its owner may read)."""
        if self.dsn is not None:
            return self.dsn
        path = Path(str(self.dsn_file))
        try:
            require_private(path)
            text = path.read_text(encoding="utf-8").strip()
        except ConfigError as exc:
            raise ConfigError(f"keystore.dsn_file: {exc}") from None
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"keystore.dsn_file: {path} cannot be read ({reason})") from None
        if not text:
            raise ConfigError(f"keystore.dsn_file: {path} is empty; write the DSN in it")
        return text

    def parameters(self) -> dict[str, str]:
        """The libpq parameters: the DSN's, then TLS, timeouts and session settings from here."""
        params = _parse(self.read_dsn(), "keystore.dsn" if self.dsn else "keystore.dsn_file")
        params.update({n: getattr(self, n) for n in _TLS_FIELDS if getattr(self, n) is not None})
        params["connect_timeout"] = str(self.connect_timeout)
        params.setdefault("application_name", "keybroker")
        for name, value in _KEEPALIVES.items():
            params.setdefault(name, value)
        # Bounds how long sent data may go unacknowledged: a query to a host that vanished
        # fails instead of hanging, which the server-side statement timeout cannot ensure.
        wait_ms = round((self.connect_timeout + self.statement_timeout) * 1000)
        params.setdefault("tcp_user_timeout", str(wait_ms))
        session = f"-c statement_timeout={round(self.statement_timeout * 1000)} -c TimeZone=UTC"
        options = params.get("options")
        params["options"] = f"{options} {session}" if options else session
        return params

    def location(self) -> str:
        """Where the database is, "host:port/dbname" (never the user or the password)."""
        return describe_location(self.parameters())


def postgres_settings(table: Mapping[str, object]) -> PostgresSettings:
    """Settings from a configuration table; an unknown name is refused, naming it."""
    known = {f.name for f in fields(PostgresSettings)}
    for name in table:
        if name not in known:
            listed = ", ".join(sorted(known))
            raise ConfigError(f"keystore.{name} is not a postgres key store setting ({listed})")
    # each value's type and range are checked by __post_init__
    return PostgresSettings(**table)  # type: ignore[arg-type]


def describe_location(params: Mapping[str, str]) -> str:
    """`host:port/dbname` from libpq parameters, with libpq's environment fallbacks."""
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or "(default database)"
    return f"{host}:{port}/{dbname}"


def _parse(dsn: str, name: str) -> dict[str, str]:
    """The DSN's parameters; a malformed DSN is refused without quoting any of it."""
    psycopg, conninfo, _ = sdk()
    try:
        parsed = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ConfigError(f"{name} is not a valid PostgreSQL connection string") from None
    return {key: str(value) for key, value in parsed.items() if value is not None}


def _require_number(name: str, value: object, *, minimum: float, maximum: int) -> None:
    """Refuse a value of the wrong type or outside [minimum, maximum].

    A whole-number minimum asks for a whole number (sizes, and libpq's connect_timeout).
    """
    integer = isinstance(minimum, int)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"keystore.{name} must be a number")
    if integer and not isinstance(value, int):
        raise ConfigError(f"keystore.{name} must be a whole number")
    if not minimum <= value <= maximum:
        raise ConfigError(f"keystore.{name} must be between {minimum} and {maximum}")
