"""The seed's audit trail: one JSON entry per KMS operation, on the seed's audit logger.

The logger keeps the seed's name, so handlers an application attached before the migration
keep receiving entries. These entries describe what the compat layer asked for; the broker
also writes its own tamper-evident audit log of every call it serves. An entry::

    {"operation": "encrypt_dek", "key_id": "...", "backend": "AWSKMSBackend",
     "success": true, "timestamp": "2026-04-08T12:00:00+00:00", "metadata": {...}}

``metadata`` appears only when given; a failure logs at ERROR and carries
``metadata["error"]``. Entries hold key ids, never key material.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["AUDIT_LOGGER_NAME", "audit_logger", "log_kms_operation"]

AUDIT_LOGGER_NAME: Final = "ecl_crypto_utility.audit"
audit_logger: Final = logging.getLogger(AUDIT_LOGGER_NAME)


def log_kms_operation(
    operation: str,
    key_id: str,
    backend_type: str,
    success: bool,  # noqa: FBT001 - the seed's positional signature
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write one audit entry: INFO on success, ERROR on failure; the JSON is the message."""
    entry: dict[str, Any] = {
        "operation": operation,
        "key_id": key_id,
        "backend": backend_type,
        "success": bool(success),
        "timestamp": datetime.now(UTC).isoformat(),
    }
    if metadata:
        entry["metadata"] = dict(metadata)
    level = logging.INFO if success else logging.ERROR
    audit_logger.log(level, json.dumps(entry, default=str), extra={"audit_entry": entry})
