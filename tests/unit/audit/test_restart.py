"""A chain restart in a file fails verification unless the operator names it."""

from __future__ import annotations

from broker.audit import verify_lines
from broker.audit.chain import Chain
from broker.audit.log import derive_audit_key

KEY = derive_audit_key(bytes(32))


def _chain(n: int, tag: str) -> list[bytes]:
    chain = Chain(KEY)
    out = []
    for i in range(n):
        line, head = chain.seal({"event": "op", "key": f"{tag}{i}"})
        chain.commit(head)
        out.append(line.rstrip(b"\n"))
    return out


class TestRestart:
    """A record at seq 0 after other records starts a new chain: nothing links it to before."""

    def test_refused_by_default(self):
        """The restart is a failure at its line, naming the seq to pass if it is expected."""
        report = verify_lines(KEY, _chain(3, "a") + _chain(2, "b"))
        assert (report.ok, report.line) == (False, 4)
        assert "--allow-restart 2" in report.problem

    def test_named_restart_passes(self):
        """--allow-restart 2 accepts exactly the restart after seq 2."""
        report = verify_lines(KEY, _chain(3, "a") + _chain(2, "b"), allow_restarts={2})
        assert (report.ok, report.records, report.restarts) == (True, 5, 1)

    def test_deletion_behind_a_restart(self):
        """Records cut from the end of the first chain move the restart: still refused."""
        lines = _chain(6, "a")[:3] + _chain(2, "b")
        report = verify_lines(KEY, lines, allow_restarts={5})
        assert (report.ok, report.line) == (False, 4)
        assert "after seq 2" in report.problem

    def test_first_record_is_no_restart(self):
        """A file that starts at seq 0 is a new chain, not a restart."""
        report = verify_lines(KEY, _chain(3, "a"))
        assert (report.ok, report.restarts) == (True, 0)
