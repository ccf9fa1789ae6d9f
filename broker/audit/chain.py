"""Tamper evidence: every record carries HMAC-SHA256(audit key, previous mac ‖ canonical JSON).

Each record holds `seq` (position in the chain), `prev` (the previous record's mac, zeros for
the first) and `mac`. Editing a record breaks its own mac; deleting or reordering records
breaks the link (`prev`, `seq`) of the record that follows. The chain only proves what lies
between its ends: the durable head (head.py) and the checkpoints (checkpoint.py) anchor its end;
verify.py checks files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from broker.audit.record import canonical

__all__ = [
    "GENESIS",
    "Chain",
    "ChainHead",
    "is_hex64",
    "parse_record",
    "self_consistent",
    "tag",
]

GENESIS = "00" * 32
_HEX = frozenset("0123456789abcdef")
_HEX_LEN = 64


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: where the next one links."""

    seq: int
    mac: str


def _mac(key: bytes, prev: str, body: bytes) -> str:
    """HMAC-SHA256 over the previous mac and the canonical body."""
    return hmac.new(key, bytes.fromhex(prev) + body, hashlib.sha256).hexdigest()


def tag(key: bytes, label: bytes, fields: dict[str, Any]) -> str:
    """HMAC-SHA256 of a label and canonical fields: the head file and checkpoints sign with it.

    The label (ASCII, ending in a newline) keeps these tags apart from record macs, whose input
    starts with 32 bytes of the previous mac.
    """
    return hmac.new(key, label + canonical(fields), hashlib.sha256).hexdigest()


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
        record = parse_record(line)
        if record is None or not self_consistent(self._key, record):
            return None
        return ChainHead(record["seq"], record["mac"])


def is_hex64(value: object) -> bool:
    """A lower-case hex SHA-256 value, as macs are written."""
    return isinstance(value, str) and len(value) == _HEX_LEN and set(value) <= _HEX


def parse_record(line: bytes) -> dict[str, Any] | None:
    """A line's record when it is a JSON object with well-formed chain fields, else None."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    seq = record.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return None
    if not is_hex64(record.get("prev")) or not is_hex64(record.get("mac")):
        return None
    return record


def self_consistent(key: bytes, record: dict[str, Any]) -> bool:
    """Whether a parsed record's mac verifies under key (its link is checked elsewhere)."""
    body = canonical({k: v for k, v in record.items() if k != "mac"})
    return hmac.compare_digest(_mac(key, record["prev"], body), record["mac"])
