"""Structured logging (structlog): JSON lines on stderr, with secret-bearing fields dropped."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO, cast

import structlog

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["SECRET_FIELDS", "configure_logging", "drop_secrets"]

# field names that must never reach a log line, whatever a caller passes
SECRET_FIELDS = frozenset(
    {"plaintext", "ciphertext", "key_material", "dek", "data_key", "password", "token", "secret"}
)


def drop_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: remove secret-bearing fields (defence in depth; callers never log them)."""
    for name in SECRET_FIELDS & event.keys():
        event[name] = "[redacted]"
    return event


class _Stderr:
    """sys.stderr as it is when a line is written, so a swapped stream is never held on to."""

    def write(self, text: str) -> int:
        """Write to the current stderr."""
        return sys.stderr.write(text)

    def flush(self) -> None:
        """Flush the current stderr."""
        sys.stderr.flush()


def configure_logging(level: str = "info", fmt: str = "json", *, cache: bool = True) -> None:
    """Configure structlog once at start: the daemon caches loggers; tools (cache=False) do not."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast("TextIO", _Stderr())),
        cache_logger_on_first_use=cache,
    )
