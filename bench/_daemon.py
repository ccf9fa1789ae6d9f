"""The benchmark's dev daemon: the shared test launcher, plus the counters the tables report."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# The one daemon launcher lives in tests/support; bench/ runs as scripts, so put it on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.daemon import Daemon, DaemonError

__all__ = ["BenchDaemon", "Counters", "Daemon", "DaemonError"]


@dataclass(frozen=True)
class Counters:
    """What the daemon has done so far, read from /metrics and /proc."""

    rpcs: float
    kms_calls: float
    cpu_seconds: float

    def __sub__(self, earlier: Counters) -> Counters:
        """The work done between two readings."""
        return Counters(
            self.rpcs - earlier.rpcs,
            self.kms_calls - earlier.kms_calls,
            self.cpu_seconds - earlier.cpu_seconds,
        )


def _metric_sum(text: str, name: str) -> float:
    """Sum every sample of one metric family over all its label sets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((f"{name}{{", f"{name} ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


class BenchDaemon(Daemon):
    """`python -m broker serve --dev` on a private temp dir; use it as a context manager."""

    new_session = True  # a Ctrl-C reaches the benchmark, which then stops the daemon

    def counters(self) -> Counters:
        """RPCs served and KMS calls made (from /metrics), and CPU time used (from /proc)."""
        text = self.metrics_text()
        return Counters(
            rpcs=_metric_sum(text, "keybroker_rpc_total"),
            kms_calls=_metric_sum(text, "keybroker_kms_calls_total"),
            cpu_seconds=self._cpu_seconds(),
        )

    def _cpu_seconds(self) -> float:
        """User plus system time of the daemon process (all its threads)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        # Fields 14 and 15 of proc_pid_stat(5); the split starts at field 3.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def audit_lines(self) -> int | None:
        """Lines in the default audit log (STATE_DIR/audit.log), None when there is none."""
        path = self.state_dir / "audit.log"
        if not path.exists():
            return None
        with path.open("rb") as f:
            return sum(1 for _ in f)
