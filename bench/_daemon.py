"""A dev daemon of the benchmark's own: temp state dir, metrics on 127.0.0.1, always stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket as socketlib
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["BenchDaemon", "Counters", "DaemonError"]

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 20.0
_REPO = Path(__file__).resolve().parent.parent


class DaemonError(RuntimeError):
    """The daemon did not start or answer; the message carries the tail of its log."""


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


def _free_port() -> int:
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric_sum(text: str, name: str) -> float:
    """Sum every sample of one metric family over all its label sets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((f"{name}{{", f"{name} ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


class BenchDaemon:
    """`python -m broker serve --dev` on a temp state dir; use it as a context manager."""

    def __init__(self) -> None:
        """Choose a temp dir and a metrics port; nothing starts until __enter__."""
        # /tmp keeps the socket path far below the 107-byte sun_path limit.
        self.root = Path(tempfile.mkdtemp(prefix="kbbench-", dir="/tmp"))
        self.state_dir = self.root / "state"
        self.socket = self.state_dir / "keybroker.sock"
        self.metrics_port = _free_port()
        self.log_path = self.root / "daemon.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        """Start the daemon and wait until its health service says SERVING."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the daemon and remove its state, whatever happened inside the block."""
        self.close()

    def _start(self) -> None:
        env = {**os.environ, "KEYBROKER_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}"}
        env.pop("KEYBROKER_SOCKET", None)
        argv = [
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--dev",
            "--state-dir",
            str(self.state_dir),
        ]
        with self.log_path.open("ab") as log:
            # A session of its own: a Ctrl-C reaches the benchmark, which then stops the daemon.
            self._proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=_REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DaemonError(f"daemon exited with {self._proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self._serving():
                return
            time.sleep(0.1)
        raise DaemonError(f"daemon not SERVING after {_START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def _serving(self) -> bool:
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        if self._proc is None:
            raise DaemonError("daemon not started")
        return self._proc.pid

    def counters(self) -> Counters:
        """RPCs served and KMS calls made (from /metrics), and CPU time used (from /proc)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
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

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the daemon wrote, for error reports."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """SIGTERM, wait, SIGKILL if it hangs; then delete the temp dir."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _kill(proc)
                except BaseException:
                    # A second Ctrl-C while waiting: still never leave the daemon behind.
                    _kill(proc)
                    raise
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
