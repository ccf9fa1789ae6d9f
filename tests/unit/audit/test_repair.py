"""A line cut short by a full disk: repaired at the next write, and verified past the repair."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import pytest

from broker.audit import log as audit_log
from broker.audit.chain import Chain
from broker.audit.log import AuditLog, AuditWriteError, FileSink, derive_audit_key, last_line
from broker.audit.verify import split_lines, verify, verify_lines

KEY = derive_audit_key(bytes(32))


def _log(path, n: int) -> AuditLog:
    """A log on path, continuing its chain, after writing n records."""
    tail = last_line(path)
    audit = AuditLog(KEY, [FileSink(path)], head=Chain(KEY).check(tail) if tail else None)
    for i in range(n):
        audit.write({"event": "op", "key": f"k{i}", "code": "OK"})
    return audit


@contextmanager
def _short_writes(sink: FileSink, *sizes: int):
    """The next writes to sink's file stop after sizes[i] bytes, as write(2) does on a full disk."""
    real = os.write
    left = list(sizes)

    def write(fd: int, data: bytes) -> int:
        if fd == sink._fd and left:
            return real(fd, data[: left.pop(0)]) if left[0] else _enospc(left)
        return real(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audit_log.os, "write", write)
        yield


def _enospc(left: list[int]) -> int:
    left.pop(0)
    raise OSError(28, "No space left on device")


def _records(path) -> list[dict]:
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({})
    return out


class TestRepairAtOpen:
    """A file left with half a line (the daemon stopped after a cut write) is repaired on open."""

    def test_partial_last_line_then_repair(self, tmp_path):
        """The next write ends the half line and records where it was; verify reads past it."""
        path = tmp_path / "audit.log"
        _log(path, 3).close()
        good = path.stat().st_size
        half = Chain(KEY, Chain(KEY).check(last_line(path))).seal({"event": "op"})[0][:40]
        with path.open("ab") as fh:
            fh.write(half)
        _log(path, 2).close()
        records = _records(path)
        assert records[3] == {}
        assert (records[4]["event"], records[4]["offset"], records[4]["length"]) == (
            "audit_repair",
            good,
            40,
        )
        assert [r["seq"] for r in records if r] == [0, 1, 2, 3, 4, 5]
        report = verify(KEY, split_lines(path.read_bytes()))
        assert (report.ok, report.records, report.head.seq) == (True, 6, 5)
        assert [(r.line, r.record_line, r.offset, r.length) for r in report.repairs] == [
            (4, 5, good, 40)
        ]

    def test_partial_line_without_repair_fails(self, tmp_path):
        """Half a line at the end of a file, not yet repaired, is still a failure."""
        path = tmp_path / "audit.log"
        _log(path, 3).close()
        with path.open("ab") as fh:
            fh.write(b'{"event":"op","key":"k')
        report = verify(KEY, split_lines(path.read_bytes()))
        assert (report.ok, report.line) == (False, 4)
        assert "cut short" in report.problem


class TestRepairWhileRunning:
    """A write cut short while the daemon runs is repaired by its next write."""

    def test_short_write_then_repair(self, tmp_path):
        """The failed record is not chained; the repair record links to the last whole record."""
        path = tmp_path / "audit.log"
        audit = _log(path, 2)
        before = path.stat().st_size
        with _short_writes(audit._sinks[0], 25), pytest.raises(AuditWriteError):
            audit.write({"event": "op", "key": "cut"})
        assert (audit.head.seq, path.stat().st_size) == (1, before + 25)
        audit.write({"event": "op", "key": "after"})
        audit.close()
        records = _records(path)
        assert records[3]["event"] == "audit_repair"
        assert (records[3]["offset"], records[3]["length"], records[3]["seq"]) == (before, 25, 2)
        assert records[4]["key"] == "after"
        report = verify(KEY, split_lines(path.read_bytes()))
        assert (report.ok, report.records, len(report.repairs)) == (True, 4, 1)

    def test_repair_cut_short_too(self, tmp_path):
        """The repair record itself cut short: one later repair names both damaged lines."""
        path = tmp_path / "audit.log"
        audit = _log(path, 1)
        before = path.stat().st_size
        with _short_writes(audit._sinks[0], 30, 1, 10, 0):
            for _ in range(2):
                with pytest.raises(AuditWriteError):
                    audit.write({"event": "op", "key": "cut"})
            with pytest.raises(AuditWriteError):
                audit.write({"event": "op", "key": "nothing written"})
        audit.write({"event": "op", "key": "after"})
        audit.close()
        repair = _records(path)[3]
        assert (repair["event"], repair["offset"], repair["length"]) == (
            "audit_repair",
            before,
            30 + 1 + 10,
        )
        report = verify(KEY, split_lines(path.read_bytes()))
        assert (report.ok, report.records) == (True, 3)
        assert [(r.line, r.record_line) for r in report.repairs] == [(2, 4)]

    def test_whole_record_without_newline(self, tmp_path):
        """A record cut just before its newline was not committed: the repair takes its place."""
        path = tmp_path / "audit.log"
        audit = _log(path, 1)
        line, _ = Chain(KEY, audit.head).seal({"event": "op", "key": "cut"})
        with _short_writes(audit._sinks[0], len(line) - 1), pytest.raises(AuditWriteError):
            audit.write({"event": "op", "key": "cut"})
        audit.write({"event": "op", "key": "after"})
        audit.close()
        report = verify(KEY, split_lines(path.read_bytes()))
        assert (report.ok, report.records, report.head.seq) == (True, 3, 2)


class TestRepairRecordChecked:
    """A repair record must name exactly the damaged lines before it."""

    def _with_repair(self, offset_shift: int, length_shift: int) -> list[bytes]:
        chain = Chain(KEY)
        lines = []
        for i in range(2):
            line, head = chain.seal({"event": "op", "key": f"k{i}"})
            chain.commit(head)
            lines.append(line.rstrip(b"\n"))
        offset = sum(len(x) + 1 for x in lines)
        lines.append(b'{"event":"op","ke')
        repair = {"event": "audit_repair", "offset": offset + offset_shift, "length": 17}
        repair["length"] += length_shift
        line, head = chain.seal(repair)
        chain.commit(head)
        return [*lines, line.rstrip(b"\n")]

    def test_exact_repair_verifies(self):
        """The right offset and length: the damaged line is skipped and reported."""
        report = verify_lines(KEY, self._with_repair(0, 0))
        assert (report.ok, report.records, len(report.repairs)) == (True, 3, 1)

    @pytest.mark.parametrize(("offset_shift", "length_shift"), [(1, -1), (0, -1), (-3, 3)])
    def test_wrong_span_fails(self, offset_shift, length_shift):
        """Any other span leaves the damaged line unrepaired: a failure that names the repair."""
        report = verify_lines(KEY, self._with_repair(offset_shift, length_shift))
        assert (report.ok, report.line) == (False, 3)
        assert "the repair record that follows does not name exactly" in report.problem

    def test_repair_with_nothing_damaged_before_it(self):
        """A repair record after a whole record, naming other bytes, fails at its own line."""
        chain = Chain(KEY)
        lines = []
        for record in ({"event": "op"}, {"event": "audit_repair", "offset": 0, "length": 5}):
            line, head = chain.seal(record)
            chain.commit(head)
            lines.append(line.rstrip(b"\n"))
        report = verify_lines(KEY, lines)
        assert (report.ok, report.line) == (False, 2)
        assert "this repair record does not name exactly" in report.problem
