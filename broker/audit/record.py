"""Audit record shape: an allow-list of fields enforced by a chain of structlog-style processors.

Only the fields named here can reach an audit line, with the type named here, so a caller of
the audit log cannot leak plaintext, key material, tokens or ciphertexts by passing them:
unknown fields are dropped, not redacted. Values are bounded in length. Times are ISO 8601 UTC;
durations are integer microseconds so the canonical JSON never depends on float formatting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

__all__ = ["FIELDS", "PROCESSORS", "REPAIR_EVENT", "START_EVENT", "canonical", "run_processors"]

# records the log writes about itself (docs/audit.md): a start of the daemon, a repaired line
START_EVENT = "start"
REPAIR_EVENT = "audit_repair"


# field -> type; the chain fields (seq, prev, mac) are added after these processors run
FIELDS: dict[str, type] = {
    "time": str,
    "event": str,
    "request_id": str,
    "method": str,
    "listener": str,
    "caller": str,
    "caller_kind": str,
    "uid": str,
    "pid": str,
    "exe": str,
    "spiffe_id": str,
    "key": str,
    "key_version": int,
    "operation": str,
    "decision": str,
    "rule_id": str,
    "code": str,
    "duration_us": int,
    "items": int,
    "limit_id": str,
    "retry_after_ms": int,
    "reason": str,
    "offset": int,  # audit_repair: where the damaged bytes start in the file
    "length": int,  # audit_repair: how many bytes they are
    "resume_seq": int,  # start: the head this run continues from
    "resume_mac": str,
    "lost_from": int,  # start: the seqs found missing from the end of the file
    "lost_to": int,
    "seq": int,
    "prev": str,
    "mac": str,
}
_MAX_STRING = 256


def allow_listed(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: keep only allow-listed fields of the allowed type; drop everything else."""
    for name in list(event):
        kind = FIELDS.get(name)
        value = event[name]
        if kind is None or type(value) is not kind:
            del event[name]
    return event


def bounded(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: cut long strings so one record stays one short line."""
    for name, value in event.items():
        if isinstance(value, str) and len(value) > _MAX_STRING:
            event[name] = value[:_MAX_STRING]
    return event


PROCESSORS: tuple[Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]], ...] = (
    allow_listed,
    bounded,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
)


def run_processors(event: dict[str, Any]) -> dict[str, Any]:
    """Apply the audit processor chain to one event."""
    out: MutableMapping[str, Any] = event
    for processor in PROCESSORS:
        out = processor(None, "info", out)
    return dict(out)


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record's MAC covers: compact JSON with sorted keys, UTF-8."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
