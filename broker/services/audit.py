"""What services tell the audit trail: one outcome per operation on a key (per batch item).

Services know item boundaries and results; who called, which rule decided and where records
go are the API layer's business, so services depend on this narrow protocol only.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NO_AUDIT", "AuditSink"]


class AuditSink(Protocol):
    """Receives item outcomes; raising fails the whole request (the record could not be kept)."""

    def item(
        self, operation: str, *, key: str, key_version: int, error: BaseException | None
    ) -> None:
        """One batch item finished: its key and version on success, or the error it got."""
        ...


class _NoAudit:
    """For services built without an audit trail (unit tests, tools)."""

    def item(
        self, operation: str, *, key: str, key_version: int, error: BaseException | None
    ) -> None:
        """Discard the outcome."""
        del operation, key, key_version, error


NO_AUDIT: AuditSink = _NoAudit()
