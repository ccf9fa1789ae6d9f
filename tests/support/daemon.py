"""The one launcher of a real `keybroker serve` process: test suites, benchmarks, client harnesses.

In Python, `Daemon` starts the daemon, waits until grpc.health.v1 says SERVING and stops it;
use `start()`/`stop()` or `with Daemon(...) as daemon:`. As a module it serves the Go, Node and
Java suites (scripts/dev-daemon.sh runs it):

    PYTHONPATH=tests .venv/bin/python -m support.daemon --dev [--state-dir DIR] [--config FILE]

It prints `KEYBROKER_SOCKET=<path>` on stdout once the daemon is SERVING, then stops the daemon
when its standard input reaches end of file or it receives SIGTERM or SIGHUP.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import socket as socketlib
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.secrets_ledger import PRODUCED, SecretRecorder

from broker.rpc.gen import envelope_pb2_grpc, key_admin_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType, TracebackType

MAX_MESSAGE = 64 << 20
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
_KILL_WAIT = 5.0
# The caller's own daemon settings never reach a test daemon; tests pass theirs in `env`.
_CALLER_SETTINGS = ("KEYBROKER_", "ECL_CRYPTO_")


class DaemonError(RuntimeError):
    """The daemon did not start, serve or stop; the message carries the tail of its log."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without keybroker settings, plus `extra`, for a daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CALLER_SETTINGS)}
    return {**env, **(extra or {})}


class Daemon:
    """A daemon process on its own state dir, with stubs connected to its socket.

    Without `state_dir` it runs in a private directory under /tmp (short enough for a socket
    path) that `close()` removes; a given `state_dir` is kept, so its logs can be scanned.
    """

    new_session = False  # True: a Ctrl-C reaches only the owner, which then stops the daemon

    def __init__(  # noqa: PLR0913 - each keyword is one way to serve; all have defaults
        self,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        *,
        metrics: bool = True,
        config: Path | None = None,
        dev: bool = True,
        socket: Path | None = None,
    ) -> None:
        """Prepare (not start) a daemon whose state lives in state_dir (or a private temp dir)."""
        self._own_dir: Path | None = None
        if state_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))
            state_dir = self._own_dir / "state"
        self.state_dir = state_dir.absolute()
        self.socket = (socket or self.state_dir / "keybroker.sock").absolute()
        self.config = config.absolute() if config else None
        self.dev = dev
        self.metrics_port = free_port() if metrics else None
        self.env = daemon_env(env)
        if self.metrics_port:
            self.env["KEYBROKER_METRICS_LISTEN"] = f"127.0.0.1:{self.metrics_port}"
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}.log"
        PRODUCED.extend([self.log_path, self.state_dir / "audit.log"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def serve_args(self) -> list[str]:
        """Arguments after `serve`: dev mode on this state dir and/or the config file."""
        dev = ["--dev", "--state-dir", str(self.state_dir)] if self.dev else []
        return [*dev, *(["--config", str(self.config)] if self.config else [])]

    @property
    def cwd(self) -> Path:
        """Where the daemon process runs."""
        return self.state_dir.parent

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        if self.proc is None:
            raise DaemonError("daemon not started")
        return self.proc.pid

    def start(self, *extra: str, timeout: float = START_TIMEOUT) -> Self:
        """Spawn `python -m broker serve …` and wait until health says SERVING."""
        argv = [sys.executable, "-m", "broker", "serve", *self.serve_args(), *extra]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=self.new_session,
            )
        self._wait_serving(self.proc, timeout)
        self.channel = self.connect()
        return self

    def _wait_serving(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DaemonError(f"daemon exited with {proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self._serving():
                return
            time.sleep(0.05)
        self.kill()
        raise DaemonError(f"daemon not SERVING after {timeout:.0f}s:\n{self.log_tail()}")

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
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

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

    def metrics_text(self) -> str:
        """The daemon's whole /metrics page."""
        if self.metrics_port is None:
            raise DaemonError("daemon started without metrics")
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample from the daemon's /metrics endpoint (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics_text().splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (
                not labels and line.startswith(f"{name} ")
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; the exit code. A daemon that hangs is killed and DaemonError raised."""
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
            raise DaemonError(
                f"daemon ignored SIGTERM for {timeout:.0f}s and was killed:\n{self.log_tail()}"
            ) from None
        except BaseException:  # a second Ctrl-C while waiting: never leave the daemon behind
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL, for cleanup after a failure."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(_KILL_WAIT)

    def close(self) -> None:
        """Stop (killing a hung daemon), then remove the private state dir if there is one."""
        try:
            self.stop()
        finally:
            self.kill()
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start the daemon unless `start()` already did; clean up if it fails to start."""
        if self.proc is None:
            try:
                self.start()
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
        """Stop the daemon whatever happened inside the block."""
        self.close()

    def log(self) -> str:
        """Everything the daemon wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the daemon wrote, to explain a failure."""
        return "\n".join(self.log().splitlines()[-lines:]) or "(the daemon wrote nothing)"


class _StopRequestedError(Exception):
    """A stop signal arrived."""


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _ignore_stop_signals() -> None:
    """Once stopping, a second signal must not interrupt the daemon's graceful stop."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _on_stop_signal(signum: int, frame: FrameType | None) -> NoReturn:
    """Unwind from serving to the stop."""
    del signum, frame
    _ignore_stop_signals()
    raise _StopRequestedError


def _serve_until_eof(daemon: Daemon) -> None:
    """Block until stdin reaches end of file; DaemonError if the daemon exits first."""
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([stdin], [], [], 1.0)
        if readable and not os.read(stdin, 4096):
            return
        if daemon.proc is not None and daemon.proc.poll() is not None:
            code = daemon.proc.returncode
            raise DaemonError(f"daemon exited with {code} while serving:\n{daemon.log_tail()}")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m support.daemon",
        description="Start a keybroker daemon, print KEYBROKER_SOCKET=PATH once it is SERVING, "
        "and stop it when standard input closes or on SIGTERM.",
    )
    parser.add_argument("--dev", action="store_true", help="serve --dev (local dev keys)")
    parser.add_argument("--config", type=Path, help="serve --config FILE")
    parser.add_argument(
        "--state-dir", type=Path, help="state directory (default: a private one, removed at exit)"
    )
    parser.add_argument("--socket", type=Path, help="socket (default: STATE_DIR/keybroker.sock)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to become SERVING")
    args = parser.parse_args(argv)
    if not (args.dev or args.config):
        parser.error("give --dev, --config FILE, or both")
    return args


def _serve(daemon: Daemon, timeout: float) -> None:
    """Start, announce the socket, serve until told to stop, then stop it cleanly or raise."""
    with contextlib.suppress(_StopRequestedError):
        daemon.start(timeout=timeout)
        sys.stdout.write(f"KEYBROKER_SOCKET={daemon.socket}\n")
        sys.stdout.flush()
        sys.stderr.write(
            f"support.daemon: keybroker pid {daemon.pid} serving, log {daemon.log_path}; "
            "it stops when stdin closes\n"
        )
        _serve_until_eof(daemon)
    _ignore_stop_signals()
    code = daemon.stop()
    if code != 0:
        raise DaemonError(f"daemon exited with {code} on SIGTERM:\n{daemon.log_tail()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one daemon for a client test suite; 1 when it fails to start, serve or stop."""
    args = _parse(argv)
    for sig in _STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # keep what the parent shell ignores
            signal.signal(sig, _on_stop_signal)
    daemon = Daemon(
        args.state_dir, dev=args.dev, config=args.config, socket=args.socket, metrics=False
    )
    try:
        _serve(daemon, args.timeout)
    except DaemonError as exc:
        sys.stderr.write(f"support.daemon: {exc}\n")
        return 1
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
