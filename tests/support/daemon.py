"""Start and stop a real `keybroker serve` process for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket as socketlib
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.secrets_ledger import PRODUCED, SecretRecorder

from broker.rpc.gen import envelope_pb2_grpc, key_admin_pb2_grpc

if TYPE_CHECKING:
    from pathlib import Path

MAX_MESSAGE = 64 << 20


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """A daemon process on its own state dir, with stubs connected to its socket."""

    def __init__(
        self,
        state_dir: Path,
        env: dict[str, str] | None = None,
        *,
        metrics: bool = True,
        config: Path | None = None,
    ) -> None:
        """Prepare (not start) a daemon whose state lives in state_dir."""
        self.state_dir = state_dir
        self.socket = state_dir / "keybroker.sock"
        self.metrics_port = free_port() if metrics else None
        self.env = {**os.environ, **(env or {})}
        self.env.pop("KEYBROKER_SOCKET", None)
        if self.metrics_port:
            self.env["KEYBROKER_METRICS_LISTEN"] = f"127.0.0.1:{self.metrics_port}"
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.config_args = ["--config", str(config)] if config else []
        PRODUCED.extend([self.log_path, state_dir / "audit.log"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def serve_args(self) -> list[str]:
        """Arguments after `serve`: dev mode on this state dir, plus the config file if any."""
        return ["--dev", "--state-dir", str(self.state_dir), *self.config_args]

    @property
    def cwd(self) -> Path:
        """Where the daemon process runs."""
        return self.state_dir.parent

    def start(self, *extra: str, timeout: float = 20.0) -> Self:
        """Spawn `python -m broker serve …` and wait until health says SERVING."""
        argv = [sys.executable, "-m", "broker", "serve", *self.serve_args(), *extra]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists() and self._serving():
                self.channel = self.connect()
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"daemon did not become SERVING within {timeout}s:\n{self.log()}")

    def connect(self) -> grpc.Channel:
        """A new channel to the daemon's socket."""
        channel = grpc.insecure_channel(
            f"unix:{self.socket}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        return grpc.intercept_channel(channel, SecretRecorder())

    def _serving(self) -> bool:
        with self.connect() as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    @property
    def envelope(self) -> envelope_pb2_grpc.EnvelopeServiceStub:
        """EnvelopeService stub."""
        assert self.channel is not None
        return envelope_pb2_grpc.EnvelopeServiceStub(self.channel)

    @property
    def admin(self) -> key_admin_pb2_grpc.KeyAdminServiceStub:
        """KeyAdminService stub."""
        assert self.channel is not None
        return key_admin_pb2_grpc.KeyAdminServiceStub(self.channel)

    def metric(self, name: str, **labels: str) -> float:
        """One sample from the daemon's /metrics endpoint (0 when absent)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (
                not labels and line.startswith(f"{name} ")
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL, for cleanup after a failure."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def log(self) -> str:
        """Everything the daemon wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
