"""Tamper evidence: every record carries HMAC-SHA256(audit key, previous mac ‖ canonical JSON).

Each record holds `seq` (position in the chain), `prev` (the previous record's mac, zeros for
the first) and `mac`. Editing a record breaks its own mac; deleting or reordering records
breaks the link (`prev`, `seq`) of the record that follows. The chain only proves what lies
between its ends: see docs/audit.md for truncation at the tail and how to anchor it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.audit.record import canonical

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["GENESIS", "Chain", "ChainHead", "VerifyReport", "verify_lines"]

GENESIS = "00" * 32
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: where the next one links."""

    seq: int
    mac: str


def _mac(key: bytes, prev: str, body: bytes) -> str:
    """HMAC-SHA256 over the previous mac and the canonical body."""
    return hmac.new(key, bytes.fromhex(prev) + body, hashlib.sha256).hexdigest()


class Chain:
    """Seals records in order; the head advances only when the caller commits a written line."""

    def __init__(self, key: bytes, head: ChainHead | None = None) -> None:
        """Continue from head, or start a new chain."""
        self._key = key
        self.head = head

    def seal(self, record: dict[str, Any]) -> tuple[bytes, ChainHead]:
        """The JSON line for record and the head it makes once written."""
        seq = 0 if self.head is None else self.head.seq + 1
        prev = GENESIS if self.head is None else self.head.mac
        body = canonical({**record, "seq": seq, "prev": prev})
        mac = _mac(self._key, prev, body)
        # the canonical body with "mac" appended: one serialization per record
        return body[:-1] + b',"mac":"' + mac.encode() + b'"}\n', ChainHead(seq, mac)

    def commit(self, head: ChainHead) -> None:
        """The line sealed with this head was written."""
        self.head = head

    def check(self, line: bytes) -> ChainHead | None:
        """The head a line makes when its own mac verifies under this key, else None."""
        record = _parse(line)
        if record is None or not _self_consistent(self._key, record):
            return None
        return ChainHead(record["seq"], record["mac"])


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX  # noqa: PLR2004


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    seq = record.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None
    if not _is_hex64(record.get("prev")) or not _is_hex64(record.get("mac")):
        return None
    return record


def _self_consistent(key: bytes, record: dict[str, Any]) -> bool:
    body = canonical({k: v for k, v in record.items() if k != "mac"})
    return hmac.compare_digest(_mac(key, record["prev"], body), record["mac"])


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The first problem (line number and what it looks like), or a clean chain's head."""

    ok: bool
    records: int
    line: int = 0
    problem: str = ""
    head: ChainHead | None = None
    starts_at: int = 0
    restarts: int = 0


def _link_problem(
    records: Sequence[dict[str, Any] | None], index: int, last: ChainHead
) -> str | None:
    """Why record `index` does not follow `last`, or None when it does (or restarts a chain)."""
    record = records[index]
    assert record is not None  # noqa: S101 - only called for parsed records
    if record["prev"] == last.mac and record["seq"] == last.seq + 1:
        return None
    if record["seq"] == 0 and record["prev"] == GENESIS:
        return None
    expected = last.seq + 1
    if record["seq"] > expected:
        if any(r is not None and r["seq"] == expected for r in records[index + 1 :]):
            return f"record {expected} appears later: records were reordered"
        missing = record["seq"] - expected
        return f"{missing} record(s) missing before this line (from seq {expected}): deleted"
    if record["seq"] <= last.seq:
        return f"seq {record['seq']} after seq {last.seq}: records were reordered or duplicated"
    return "does not link to the previous line: a record was replaced"


def _line_problem(
    key: bytes, records: Sequence[dict[str, Any] | None], index: int, last: ChainHead | None
) -> str | None:
    record = records[index]
    if record is None:
        return "not an audit record: edited or cut"
    if not _self_consistent(key, record):
        return "MAC mismatch: the record was edited"
    return None if last is None else _link_problem(records, index, last)


def verify_lines(key: bytes, lines: Sequence[bytes]) -> VerifyReport:
    """Check every line in order; report the first edited, deleted or reordered record."""
    records = [_parse(line) for line in lines]
    last: ChainHead | None = None
    restarts = 0
    for index, record in enumerate(records):
        problem = _line_problem(key, records, index, last)
        if problem is not None or record is None:
            return VerifyReport(ok=False, records=index, line=index + 1, problem=problem or "")
        if last is not None and record["seq"] == 0:
            restarts += 1
        last = ChainHead(record["seq"], record["mac"])
    first = records[0] if records else None
    return VerifyReport(
        ok=True,
        records=len(records),
        head=last,
        starts_at=first["seq"] if first else 0,
        restarts=restarts,
    )
