"""`audit verify`: the chain across files, repaired lines, starts, restarts and checkpoints.

The first problem found is reported with its line: an edited, deleted, reordered or replaced
record; a line cut short that no `audit_repair` record repairs; a repair record that does not
name exactly the damaged lines before it; a start record that found the tail of the file cut
(tail truncated); a chain restart the operator did not name; a checkpoint the files do not
reach. Lines a repair record names are skipped: the chain links across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.audit.chain import GENESIS, ChainHead, parse_record, self_consistent
from broker.audit.record import REPAIR_EVENT, START_EVENT

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from broker.audit.checkpoint import Checkpoint

__all__ = ["Line", "Repair", "VerifyReport", "split_lines", "verify", "verify_lines"]


@dataclass(frozen=True, slots=True)
class Line:
    """One line of an audit file, where it lies, and whether a newline ended it."""

    data: bytes
    offset: int
    file: int = 0
    number: int = 1
    whole: bool = True


def split_lines(content: bytes, file: int = 0) -> list[Line]:
    """A file's lines with their byte offsets; a last line without a newline is not whole."""
    parts = content.split(b"\n")
    rest = parts.pop()  # empty when the file ends with a newline
    lines, offset = [], 0
    for number, data in enumerate(parts, start=1):
        lines.append(Line(data, offset, file, number))
        offset += len(data) + 1
    if rest:
        lines.append(Line(rest, offset, file, len(parts) + 1, whole=False))
    return lines


@dataclass(frozen=True, slots=True)
class Repair:
    """Damaged lines (from `line`, 1-based among the lines given) and the record naming them."""

    line: int
    record_line: int
    offset: int
    length: int


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
    repairs: tuple[Repair, ...] = ()
    checkpoint: Checkpoint | None = None


class _Problem(Exception):  # noqa: N818 - a private signal carrying the report's line
    """The first problem: where (index into the lines) and what."""

    def __init__(self, index: int, text: str) -> None:
        super().__init__(text)
        self.index, self.text = index, text


def _int(record: dict[str, Any], name: str) -> int | None:
    value = record.get(name)
    return value if type(value) is int and value >= 0 else None


class _Walk:
    """One pass over the lines, in order, holding what the next record must link to."""

    def __init__(
        self,
        key: bytes,
        lines: Sequence[Line],
        allow_restarts: Collection[int],
        checkpoint: Checkpoint | None,
    ) -> None:
        self.key = key
        self.lines = lines
        self.records = [parse_record(line.data) for line in lines]
        self.valid = [r is not None and self_consistent(key, r) for r in self.records]
        self.allow = allow_restarts
        self.last: ChainHead | None = None
        self.first: int | None = None
        self.count = self.restarts = 0
        self.wrong: set[int] = set()  # repair records that name other bytes than before them
        self.checkpoint = checkpoint
        self.reached = False  # a record is the checkpoint's, or links to it

    def repairs(self) -> tuple[list[Repair], set[int], set[int]]:
        """Every repair record, the lines it covers, and the repair records naming other bytes."""
        repairs: list[Repair] = []
        covered: set[int] = set()
        wrong: set[int] = set()
        for index, record in enumerate(self.records):
            if record is None or not self.valid[index] or record.get("event") != REPAIR_EVENT:
                continue
            first = self._span(index, record)
            if first is None:
                wrong.add(index)
                continue
            repairs.append(Repair(first + 1, index + 1, record["offset"], record["length"]))
            covered.update(range(first, index))
        return repairs, covered, wrong

    def _span(self, index: int, record: dict[str, Any]) -> int | None:
        """The first of the lines right before index that hold exactly the named bytes."""
        offset, length = _int(record, "offset"), _int(record, "length")
        here = self.lines[index]
        if offset is None or not length or here.offset != offset + length + 1:
            return None
        first = index
        while first > 0 and self.lines[first - 1].file == here.file:
            if self.lines[first - 1].offset < offset:
                break
            first -= 1
        return first if first < index and self.lines[first].offset == offset else None

    def run(self) -> list[Repair]:
        """Check every line in order, skipping repaired ones; _Problem at the first problem."""
        repairs, covered, self.wrong = self.repairs()
        for index in range(len(self.lines)):
            if index in self.wrong - covered:
                raise _Problem(
                    index, "this repair record does not name exactly the lines before it"
                )
            if index not in covered:
                self.check(index)
        problem = self.unreached(self.checkpoint) if self.checkpoint is not None else None
        if problem is not None:
            raise _Problem(len(self.lines) - 1, problem)
        return repairs

    def check(self, index: int) -> None:
        """Check one record against the last; _Problem if it does not follow."""
        record = self.records[index]
        if record is None:
            raise _Problem(index, self._unreadable(index))
        if not self.valid[index]:
            raise _Problem(index, "MAC mismatch: the record was edited")
        if self.last is not None:
            self._link(index, record, self.last)
        lost = _lost(record)
        if lost is not None:
            raise _Problem(index, lost)
        self.last = ChainHead(record["seq"], record["mac"])
        cp = self.checkpoint
        if cp is not None and (
            (self.last.seq, self.last.mac) == (cp.seq, cp.mac)
            or (record["seq"], record["prev"]) == (cp.seq + 1, cp.mac)
        ):
            self.reached = True
        self.first = record["seq"] if self.first is None else self.first
        self.count += 1

    def _unreadable(self, index: int) -> str:
        """What a line that is no record looks like, and whether a repair record misnames it."""
        text = "not an audit record: edited or cut" if self.lines[index].whole else _CUT
        after = (j for j in range(index + 1, len(self.records)) if self.records[j] is not None)
        if next(after, None) in self.wrong:
            return f"{text}; the repair record that follows does not name exactly these lines"
        return text

    def _link(self, index: int, record: dict[str, Any], last: ChainHead) -> None:
        if record["prev"] == last.mac and record["seq"] == last.seq + 1:
            return
        if record["seq"] == 0 and record["prev"] == GENESIS:
            if last.seq not in self.allow:
                raise _Problem(index, _restart(last.seq))
            self.restarts += 1
            return
        for near in self.records[index : index + 2]:  # a start record, maybe after a repair
            lost = _lost(near) if near is not None else None
            if lost is not None:
                raise _Problem(index, lost)
        raise _Problem(index, self._break(index, record, last))

    def _break(self, index: int, record: dict[str, Any], last: ChainHead) -> str:
        """What a record that does not follow the last one looks like."""
        expected = last.seq + 1
        if record["seq"] > expected:
            if any(r is not None and r["seq"] == expected for r in self.records[index + 1 :]):
                return f"record {expected} appears later: records were reordered"
            missing = record["seq"] - expected
            return f"{missing} record(s) missing before this line (from seq {expected}): deleted"
        if record["seq"] <= last.seq:
            return f"seq {record['seq']} after seq {last.seq}: records were reordered or duplicated"
        return "does not link to the previous line: a record was replaced"

    def unreached(self, cp: Checkpoint) -> str | None:
        """Why the records do not reach the checkpoint's head, or None when they do."""
        if not cp.signed_by(self.key):
            return "the checkpoint does not verify under this key: another root key, or edited"
        if self.reached:
            return None
        at = f"the checkpoint of {cp.time} names seq {cp.seq}"
        if self.last is None or self.last.seq < cp.seq:
            end = -1 if self.last is None else self.last.seq
            cut = f"records {end + 1}..{cp.seq} were cut from the end"
            return f"{at} but the log ends at seq {end}: {cut}"
        if self.first is not None and self.first > cp.seq:
            return f"{at} but the files start at seq {self.first}: pass the file that holds it"
        return f"{at} with another mac: records were replaced"


_CUT = "a line cut short (no newline): a write was cut, and no audit_repair record repairs it"


def _restart(after: int) -> str:
    return (
        f"the chain restarts here after seq {after}; a restart can hide removed records "
        f"(pass --allow-restart {after} if the daemon restarted it)"
    )


def _lost(record: dict[str, Any]) -> str | None:
    """What a start record that found the tail of the file cut says, else None."""
    if record.get("event") != START_EVENT:
        return None
    first, last = _int(record, "lost_from"), _int(record, "lost_to")
    if first is None or last is None:
        return None
    return (
        f"tail truncated: records {first}..{last} were missing from the end of the log "
        "when the daemon started"
    )


def verify(
    key: bytes,
    lines: Sequence[Line],
    *,
    allow_restarts: Collection[int] = (),
    checkpoint: Checkpoint | None = None,
) -> VerifyReport:
    """Check every line in order, skipping repaired ones; report the first problem."""
    walk = _Walk(key, lines, allow_restarts, checkpoint)
    try:
        repairs = walk.run()
    except _Problem as found:
        return VerifyReport(ok=False, records=walk.count, line=found.index + 1, problem=found.text)
    return VerifyReport(
        ok=True,
        records=walk.count,
        head=walk.last,
        starts_at=walk.first or 0,
        restarts=walk.restarts,
        repairs=tuple(repairs),
        checkpoint=checkpoint,
    )


def verify_lines(
    key: bytes,
    lines: Sequence[bytes],
    *,
    allow_restarts: Collection[int] = (),
    checkpoint: Checkpoint | None = None,
) -> VerifyReport:
    """verify() for the lines of one file, given without their newlines."""
    return verify(
        key,
        split_lines(b"".join(line + b"\n" for line in lines)),
        allow_restarts=allow_restarts,
        checkpoint=checkpoint,
    )
