"""The audit chain: sealing, verification of edits, deletions and reordering, the allow-list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.audit.chain import Chain
from broker.audit.log import AuditLog, AuditWriteError, FileSink, derive_audit_key, last_line
from broker.audit.record import run_processors
from broker.audit.verify import verify_lines

KEY = derive_audit_key(bytes(32))
FULL = Path("/dev/full")  # every write fails with ENOSPC


def _lines(n: int) -> list[bytes]:
    chain = Chain(KEY)
    out = []
    for i in range(n):
        line, head = chain.seal({"event": "op", "key": f"k{i}", "code": "OK"})
        chain.commit(head)
        out.append(line.rstrip(b"\n"))
    return out


class TestVerify:
    """verify_lines reports the first broken record by line number."""

    def test_clean(self):
        """An untouched chain verifies, with its head."""
        report = verify_lines(KEY, _lines(5))
        assert (report.ok, report.records, report.head.seq) == (True, 5, 4)

    def test_edited(self):
        """Changing one field of line 3 is a MAC mismatch at line 3."""
        lines = _lines(5)
        lines[2] = lines[2].replace(b'"code":"OK"', b'"code":"NO"')
        report = verify_lines(KEY, lines)
        assert (report.ok, report.line) == (False, 3)
        assert "edited" in report.problem

    def test_deleted(self):
        """Removing line 3 is reported at the line that now follows line 2."""
        lines = _lines(5)
        del lines[2]
        report = verify_lines(KEY, lines)
        assert (report.ok, report.line) == (False, 3)
        assert "deleted" in report.problem

    def test_reordered(self):
        """Swapping lines 2 and 3 is reported at line 2 as reordering."""
        lines = _lines(5)
        lines[1], lines[2] = lines[2], lines[1]
        report = verify_lines(KEY, lines)
        assert (report.ok, report.line) == (False, 2)
        assert "reordered" in report.problem

    def test_wrong_key(self):
        """Another key fails at line 1."""
        report = verify_lines(derive_audit_key(b"\x01" * 32), _lines(2))
        assert (report.ok, report.line) == (False, 1)

    def test_truncated_line(self):
        """A cut line is not a record."""
        lines = _lines(3)
        lines[1] = lines[1][:40]
        assert verify_lines(KEY, lines).line == 2

    def test_rotated_file_starts_mid_chain(self):
        """The second half of a chain verifies alone and says where it starts."""
        report = verify_lines(KEY, _lines(6)[3:])
        assert (report.ok, report.starts_at) == (True, 3)


class TestAllowList:
    """Only allow-listed fields of the right type reach a record."""

    def test_secrets_are_dropped(self):
        """plaintext, tokens, keys and nested values never survive the processors."""
        event = {
            "event": "op",
            "key": "pii",
            "plaintext": b"secret",
            "token": "tok",
            "data_key": "00" * 32,
            "key_version": "1",
            "context": {"tenant": "a"},
            "items": True,
        }
        record = run_processors(event)
        assert set(record) == {"event", "key", "time"}

    def test_long_values_are_cut(self):
        """Strings are bounded to 256 characters."""
        assert len(run_processors({"key": "x" * 1000})["key"]) == 256


class TestAuditLog:
    """Writing through sinks, continuing a chain, failing closed."""

    def test_continue_after_restart(self, tmp_path):
        """A new log continues the chain from the file's last line."""
        path = tmp_path / "audit.log"
        first = AuditLog(KEY, [FileSink(path)])
        first.write({"event": "op"})
        first.close()
        head = Chain(KEY).check(last_line(path))
        second = AuditLog(KEY, [FileSink(path)], head=head)
        second.write({"event": "op"})
        second.close()
        lines = path.read_bytes().splitlines()
        report = verify_lines(KEY, lines)
        assert (report.ok, report.records, report.restarts) == (True, 2, 0)
        assert json.loads(lines[1])["seq"] == 1

    def test_fail_closed(self, tmp_path):
        """A full disk (/dev/full) fails the write; fail-open only counts it."""
        del tmp_path
        closed = AuditLog(KEY, [FileSink(FULL)])
        with pytest.raises(AuditWriteError):
            closed.write({"event": "op"})
        opened = AuditLog(KEY, [FileSink(FULL)], fail_closed=False)
        opened.write({"event": "op"})
        assert (opened.failures, opened.written, opened.head) == (1, 0, None)
