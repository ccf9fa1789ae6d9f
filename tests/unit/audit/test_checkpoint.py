"""Signed checkpoints of the head, sent to a second sink, show a tail cut from the log."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from broker.audit.chain import Chain, ChainHead
from broker.audit.checkpoint import Checkpointer, find_checkpoint, make_checkpoint
from broker.audit.log import AuditLog, FileSink, derive_audit_key
from broker.audit.verify import verify_lines

KEY = derive_audit_key(bytes(32))
OTHER_KEY = derive_audit_key(b"\x01" * 32)
TIME = "2026-01-01T12:00:00.000000Z"


def _lines(n: int) -> list[bytes]:
    chain = Chain(KEY)
    out = []
    for i in range(n):
        line, head = chain.seal({"event": "op", "key": f"k{i}"})
        chain.commit(head)
        out.append(line.rstrip(b"\n"))
    return out


def _head(line: bytes) -> ChainHead:
    head = Chain(KEY).check(line)
    assert head is not None
    return head


class TestCheckpointCheck:
    """verify with a checkpoint: the log must reach the checkpoint's head, with its mac."""

    def test_cut_tail_at_a_line_boundary(self):
        """Two whole lines removed from the end: the chain alone passes, the checkpoint fails."""
        lines = _lines(6)
        checkpoint = make_checkpoint(KEY, _head(lines[-1]), TIME)
        assert verify_lines(KEY, lines, checkpoint=checkpoint).ok
        assert verify_lines(KEY, lines[:4]).ok
        report = verify_lines(KEY, lines[:4], checkpoint=checkpoint)
        assert (report.ok, report.line) == (False, 4)
        assert "records 4..5 were cut from the end" in report.problem
        assert TIME in report.problem

    def test_older_checkpoint_passes(self):
        """A log that has grown past the checkpoint passes."""
        lines = _lines(6)
        report = verify_lines(KEY, lines, checkpoint=make_checkpoint(KEY, _head(lines[2]), TIME))
        assert (report.ok, report.checkpoint.seq) == (True, 2)

    def test_link_from_the_checkpoint(self):
        """Files that start right after the checkpoint's record pass when they link to it."""
        lines = _lines(6)
        checkpoint = make_checkpoint(KEY, _head(lines[2]), TIME)
        assert verify_lines(KEY, lines[3:], checkpoint=checkpoint).ok
        report = verify_lines(KEY, lines[4:], checkpoint=checkpoint)
        assert not report.ok
        assert "pass the file that holds it" in report.problem

    def test_other_mac(self):
        """A checkpoint naming another mac for a seq the log holds: replaced records."""
        lines = _lines(4)
        checkpoint = make_checkpoint(KEY, ChainHead(2, "ab" * 32), TIME)
        report = verify_lines(KEY, lines, checkpoint=checkpoint)
        assert not report.ok
        assert "replaced" in report.problem

    def test_forged_checkpoint(self):
        """A checkpoint signed under another key is refused before anything is compared."""
        lines = _lines(4)
        report = verify_lines(
            KEY, lines, checkpoint=make_checkpoint(OTHER_KEY, _head(lines[3]), TIME)
        )
        assert not report.ok
        assert "does not verify" in report.problem


class TestFindCheckpoint:
    """A checkpoint given as its JSON value, or found as the last one in a file."""

    def test_value_round_trip(self):
        """The line a checkpoint file holds parses back to the same checkpoint."""
        checkpoint = make_checkpoint(KEY, ChainHead(7, "cd" * 32), TIME)
        assert find_checkpoint(checkpoint.line().decode()) == checkpoint

    def test_last_one_in_a_daemon_log(self):
        """Among other JSON log lines, the last audit_checkpoint wins."""
        first = make_checkpoint(KEY, ChainHead(1, "cd" * 32), TIME)
        second = make_checkpoint(KEY, ChainHead(3, "ef" * 32), TIME)
        text = "\n".join(
            [
                json.dumps({"event": "started", "level": "info"}),
                json.dumps({**json.loads(first.line()), "level": "info"}),
                "not json",
                json.dumps({**json.loads(second.line()), "level": "info", "timestamp": TIME}),
                json.dumps({"event": "stopping"}),
            ]
        )
        assert find_checkpoint(text) == second

    def test_none(self):
        """Text without a checkpoint gives None."""
        assert find_checkpoint('{"event": "started"}\n') is None


def _clock() -> datetime:
    return datetime(2026, 1, 1, 12, tzinfo=UTC)


class TestCheckpointer:
    """The daemon side: checkpoints to the log stream and a file, when the head moved."""

    def test_emit(self, tmp_path):
        """A checkpoint goes to the log and the file; an unchanged head is not repeated."""
        audit = AuditLog(KEY, [FileSink(tmp_path / "audit.log")])
        file = tmp_path / "elsewhere" / "checkpoint.json"
        file.parent.mkdir()
        checkpoints = Checkpointer(KEY, audit, file, interval=60, clock=_clock)
        assert checkpoints.emit() is None
        audit.write({"event": "op"})
        with capture_logs() as logs:
            made = checkpoints.emit()
            assert checkpoints.emit() is None
            assert checkpoints.emit(force=True) == made
        assert [e["event"] for e in logs] == ["audit_checkpoint", "audit_checkpoint"]
        assert (logs[0]["seq"], logs[0]["mac"], logs[0]["time"]) == (0, audit.head.mac, TIME)
        assert find_checkpoint(file.read_text()) == made
        assert file.stat().st_mode & 0o777 == 0o600
        audit.close()

    def test_stop(self, tmp_path):
        """At stop a checkpoint is emitted even if the head did not move, and none after it."""
        audit = AuditLog(KEY, [FileSink(tmp_path / "audit.log")])
        audit.write({"event": "op"})
        checkpoints = Checkpointer(KEY, audit, None, interval=60, clock=_clock)
        first = checkpoints.emit()
        assert checkpoints.stop() == first
        audit.write({"event": "op"})
        assert (checkpoints.emit(), checkpoints.stop()) == (None, None)
        audit.close()

    def test_run_every_interval(self, tmp_path):
        """The task emits on its own, every interval."""
        audit = AuditLog(KEY, [FileSink(tmp_path / "audit.log")])
        audit.write({"event": "op"})
        checkpoints = Checkpointer(KEY, audit, None, interval=0.01, clock=_clock)

        async def run() -> None:
            task = asyncio.create_task(checkpoints.run())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        with capture_logs() as logs:
            asyncio.run(run())
        assert [e["event"] for e in logs] == ["audit_checkpoint"]
        audit.close()
