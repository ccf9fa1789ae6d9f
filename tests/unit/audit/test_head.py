"""The durable head: kept beside the log, read at start, so a cut tail is seen and never reused."""

from __future__ import annotations

import json

import pytest

from broker.audit.chain import Chain, ChainHead
from broker.audit.head import HeadStore, resume
from broker.audit.log import AuditLog, FileSink, derive_audit_key, last_line
from broker.audit.verify import split_lines, verify

KEY = derive_audit_key(bytes(32))
OTHER_KEY = derive_audit_key(b"\x01" * 32)
A = ChainHead(4, "aa" * 32)
B = ChainHead(9, "bb" * 32)


class TestHeadStore:
    """Two signed slots, written in turn, so a torn write leaves the previous head readable."""

    def test_round_trip(self, tmp_path):
        """The last head saved is the one read back, by a new store on the same file."""
        store = HeadStore(tmp_path / "audit.head", KEY)
        assert store.head is None
        store.save(A)
        store.save(B)
        store.close()
        again = HeadStore(tmp_path / "audit.head", KEY)
        assert (again.head, again.unreadable) == (B, False)
        again.close()
        assert (tmp_path / "audit.head").stat().st_mode & 0o777 == 0o600

    def test_torn_slot_falls_back(self, tmp_path):
        """A damaged newest slot: the one before it is read."""
        path = tmp_path / "audit.head"
        store = HeadStore(path, KEY)
        store.save(A)
        store.save(B)
        store.close()
        data = bytearray(path.read_bytes())
        newest = data.index(b'"seq":9')
        data[newest + 6] = ord("8")
        path.write_bytes(bytes(data))
        assert HeadStore(path, KEY).head == A

    def test_never_saved(self, tmp_path):
        """A head file created but never written to is empty, not unreadable."""
        HeadStore(tmp_path / "audit.head", KEY).close()
        again = HeadStore(tmp_path / "audit.head", KEY)
        assert (again.head, again.unreadable) == (None, False)

    def test_other_key(self, tmp_path):
        """Slots signed under another root key are not trusted, and the store says so."""
        store = HeadStore(tmp_path / "audit.head", OTHER_KEY)
        store.save(A)
        store.close()
        again = HeadStore(tmp_path / "audit.head", KEY)
        assert (again.head, again.unreadable) == (None, True)


class TestResume:
    """Where a starting daemon continues, and what its start record says."""

    def test_new_log(self):
        """No file, no head: a new chain whose start record names nothing before it."""
        resumed = resume(None, None, unverified_tail=False)
        assert (resumed.head, resumed.event, resumed.lost) == (None, {"event": "start"}, None)

    @pytest.mark.parametrize(
        ("file_head", "durable", "head"),
        [(B, B, B), (B, A, B), (None, B, B)],
        ids=["same", "file-ahead", "file-empty"],
    )
    def test_continues(self, file_head, durable, head):
        """The start record names the head it continues from; nothing is reported lost."""
        resumed = resume(file_head, durable, unverified_tail=False)
        assert resumed.head == head
        assert resumed.event == {"event": "start", "resume_seq": head.seq, "resume_mac": head.mac}
        assert (resumed.lost, resumed.restarted) == (None, False)

    def test_file_behind_durable_head(self):
        """The file ends before the durable head: the numbers after it are lost, not reused."""
        resumed = resume(A, B, unverified_tail=False)
        assert resumed.head == B
        assert resumed.lost == (5, 9)
        assert (resumed.event["lost_from"], resumed.event["lost_to"]) == (5, 9)

    def test_unverified_tail_links_to_durable_head(self):
        """A last line that does not verify: the chain still links, to the durable head."""
        resumed = resume(None, B, unverified_tail=True)
        assert (resumed.head, resumed.restarted) == (B, False)

    def test_restart_only_when_nothing_links(self):
        """No durable head and a last line that does not verify: a restart, said out loud."""
        resumed = resume(None, None, unverified_tail=True)
        assert (resumed.head, resumed.restarted) == (None, True)
        assert resumed.event["reason"]


def _run(path, state, n: int) -> None:
    """One daemon run: resume from the file and the head, write the start record and n more."""
    store = HeadStore(state, KEY)
    tail = last_line(path)
    file_head = Chain(KEY).check(tail) if tail else None
    resumed = resume(file_head, store.head, unverified_tail=bool(tail) and file_head is None)
    audit = AuditLog(KEY, [FileSink(path)], head=resumed.head, store=store)
    audit.start(resumed.event)
    for i in range(n):
        audit.write({"event": "op", "key": f"k{i}"})
    audit.close()


class TestTruncatedTail:
    """The end of the file cut off between two runs is reported, and its numbers not reused."""

    def test_truncation_detected_via_durable_head(self, tmp_path):
        """Cut at a line boundary: the next start names the lost seqs and verify fails."""
        path, state = tmp_path / "audit.log", tmp_path / "audit.head"
        _run(path, state, 5)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:3]))
        _run(path, state, 1)
        records = [json.loads(x) for x in path.read_bytes().splitlines()]
        assert [r["seq"] for r in records] == [0, 1, 2, 6, 7]
        start = records[3]
        assert (start["event"], start["lost_from"], start["lost_to"]) == ("start", 3, 5)
        assert (start["resume_seq"], start["prev"]) == (5, start["resume_mac"])
        report = verify(KEY, split_lines(path.read_bytes()))
        assert (report.ok, report.line) == (False, 4)
        assert "tail truncated" in report.problem
        assert "3..5" in report.problem

    def test_restart_after_a_clean_stop_links(self, tmp_path):
        """No cut: each run's start record continues the chain and the file verifies."""
        path, state = tmp_path / "audit.log", tmp_path / "audit.head"
        for _ in range(3):
            _run(path, state, 2)
        report = verify(KEY, split_lines(path.read_bytes()))
        assert (report.ok, report.records, report.restarts) == (True, 9, 0)

    def test_emptied_file_continues_numbering(self, tmp_path):
        """A file renamed away while stopped: the new file continues from the durable head."""
        path, state = tmp_path / "audit.log", tmp_path / "audit.head"
        _run(path, state, 2)
        path.rename(tmp_path / "audit.log.1")
        _run(path, state, 1)
        first = json.loads(path.read_bytes().splitlines()[0])
        assert (first["event"], first["seq"]) == ("start", 3)
        both = (tmp_path / "audit.log.1").read_bytes() + path.read_bytes()
        assert verify(KEY, split_lines(both)).ok
