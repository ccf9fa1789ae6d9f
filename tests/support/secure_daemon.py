"""Daemons started from a configuration file, with every RPC's request id kept for the audit check.

Everything these daemons write (logs, audit files) and every secret the tests handle is kept in
module-level ledgers, so the last test of tests/daemon/security can scan the files for the secrets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Self

import grpc
from support.daemon import START_TIMEOUT, Daemon
from support.secrets_ledger import SecretRecorder

DIRS: list[Path] = []  # short directories to remove at the end of the session
REQUEST_IDS_KEY = "keybroker-request-id"
SKIP_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def short_dir(prefix: str = "kb") -> Path:
    """A short (sun_path) directory under /tmp that other users may traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    DIRS.append(path)
    return path


class Ledger:
    """Request ids of the RPCs a test made, by method."""

    def __init__(self) -> None:
        """Empty."""
        self.calls: list[tuple[str, str]] = []

    def add(self, method: str, metadata: Any) -> None:
        """Remember the request id the daemon sent back."""
        if method.startswith(SKIP_METHODS):
            return
        ids = [v for k, v in (metadata or ()) if k == REQUEST_IDS_KEY]
        self.calls.append((method, ids[0] if ids else ""))


class _Recorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Client interceptor that records each call's request id from its trailing metadata."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def intercept_unary_unary(self, continuation, client_call_details, request):
        outcome = continuation(client_call_details, request)
        self._ledger.add(client_call_details.method, outcome.trailing_metadata())
        return outcome

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        call = continuation(client_call_details, request_iterator)
        return _Drained(
            call, lambda: self._ledger.add(client_call_details.method, call.trailing_metadata())
        )


class _Drained:
    """A response iterator that reports when it is exhausted or fails."""

    def __init__(self, call, done) -> None:
        self._call, self._done, self._reported = call, done, False

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._call)
        except BaseException:
            if not self._reported:
                self._reported = True
                self._done()
            raise

    def __getattr__(self, name):
        return getattr(self._call, name)


class ConfiguredDaemon(Daemon):
    """A daemon started with `serve --config FILE`; health is checked on `socket`."""

    def __init__(self, base: Path, config: str, socket: Path, env: dict[str, str] | None = None):
        """Write nothing yet; `config` is the TOML text."""
        config_path = base / "keybroker.toml"
        super().__init__(base / "state", env, config=config_path, dev=False, socket=socket)
        self.base = base
        self.config_path = config_path
        self.config_text = config
        self.ledger = Ledger()
        self.audit_path = base / "state" / "audit.log"

    def start(self, *extra: str, timeout: float = START_TIMEOUT) -> Self:
        """Write the configuration file (0600), then serve from it."""
        self.config_path.write_text(self.config_text, encoding="utf-8")
        self.config_path.chmod(0o600)
        return super().start(*extra, timeout=timeout)

    def connect(self, socket: Path | None = None) -> grpc.Channel:
        """A channel to a socket of this daemon whose calls are recorded in the ledger."""
        raw = grpc.insecure_channel(f"unix:{socket or self.socket}")
        return grpc.intercept_channel(raw, _Recorder(self.ledger), SecretRecorder())

    def audit_files(self) -> list[Path]:
        """The audit file and any rotated ones (audit.log.N), oldest first."""
        rotated = sorted(self.audit_path.parent.glob("audit.log.*"), reverse=True)
        return [*rotated, self.audit_path] if self.audit_path.exists() else rotated

    def records(self) -> list[dict[str, Any]]:
        """Every audit record written so far, across rotated files."""
        return [
            json.loads(line)
            for path in self.audit_files()
            for line in path.read_bytes().splitlines()
        ]

    def check_audited(self) -> None:
        """Every RPC recorded in the ledger has its `rpc` audit record, and the chain verifies."""
        rpc_ids = {r["request_id"] for r in self.records() if r["event"] == "rpc"}
        missing = [(m, rid) for m, rid in self.ledger.calls if not rid or rid not in rpc_ids]
        assert not missing, f"RPCs without an audit record: {missing}"
        files = self.audit_files()
        if files:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "broker",
                    "audit",
                    "verify",
                    *map(str, files),
                    "--state-dir",
                    str(self.state_dir),
                ],
                capture_output=True,
                text=True,
                check=False,
                env=self.env,
            )
            assert out.returncode == 0, out.stdout + out.stderr


def stop_all(daemons: list[ConfiguredDaemon]) -> None:
    """Stop, then check each daemon's audit trail."""
    for d in daemons:
        try:
            d.stop()
        finally:
            d.kill()
    for d in daemons:
        d.check_audited()


def remove(path: Path) -> None:
    """Remove a test directory tree."""
    shutil.rmtree(path, ignore_errors=True)


def env_without_socket() -> dict[str, str]:
    """The test environment minus the socket variable."""
    env = dict(os.environ)
    env.pop("KEYBROKER_SOCKET", None)
    return env
