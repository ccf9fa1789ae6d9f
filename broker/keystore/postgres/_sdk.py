"""psycopg 3 and its pool, imported once on first use; without them, one line names the extra.

The key store sits below `broker.kms`, so it carries its own copy of the lazy import rather
than reaching up to `broker.kms._lazy`.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, NamedTuple

from broker.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["PostgresSdk", "sdk"]

_EXTRA = "postgres"


class PostgresSdk(NamedTuple):
    """The modules of psycopg the PostgreSQL key store uses."""

    psycopg: ModuleType
    conninfo: ModuleType
    pool: ModuleType


def _import(module: str) -> ModuleType:
    """Import `module`, or fail with a one-line fix naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"the Python module {module!r} is missing: install keybroker[{_EXTRA}]"
        raise ConfigError(msg) from exc


@functools.cache
def sdk() -> PostgresSdk:
    """The psycopg modules (cached: imported on first use only)."""
    return PostgresSdk(*(_import(m) for m in ("psycopg", "psycopg.conninfo", "psycopg_pool")))
