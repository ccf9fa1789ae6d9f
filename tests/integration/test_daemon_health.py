"""Health that follows the KMS: a real daemon with a Vault Transit key on OpenBao.

OpenBao is stopped, frozen and started again under a running daemon; its per-backend health
name, the envelope service's status, `keybroker_backend_up` and `keybroker healthcheck --deep`
follow, while the overall status (the liveness probe) stays SERVING.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from integration.kms.openbao import start_openbao
from support.daemon import Daemon

from broker.rpc.gen import envelope_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from integration.kms.openbao import OpenBaoServer

VAULT = "keybroker.backend.vault-transit"
LOCAL = "keybroker.backend.local"
ENVELOPE = "keybroker.v1.EnvelopeService"
PROBE_SECONDS = 0.3
# a few probe intervals plus the probe's own timeout, with room for a loaded machine
WITHIN = 6.0


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBaoServer]:
    """OpenBao in dev mode with one transit key; its root token survives a restart."""
    server = start_openbao()
    server.create_key("app")
    try:
        yield server
    finally:
        server.stop()


def _config(path: Path, bao: OpenBaoServer, *, local_key: bool) -> Path:
    """Envelope keys on Vault (and on the local backend), probed every PROBE_SECONDS."""
    local = '[keys.on-local]\nuri = "local://on-local"\n' if local_key else ""
    path.write_text(
        f"""
{local}
[keys.on-vault]
uri = "vault-transit://transit/app"

[backends.vault]
address = "{bao.url}"
token = "{bao.root_token}"
[backends.vault.resilience]
timeout = 2.0
breaker_failures = 2
breaker_reset_seconds = 0.5

[health]
probe_seconds = {PROBE_SECONDS}
timeout_seconds = 0.5
"""
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def daemon(bao: OpenBaoServer, tmp_path: Path) -> Iterator[Daemon]:
    """A daemon with one key on Vault and one on the local backend."""
    config = _config(tmp_path / "keybroker.toml", bao, local_key=True)
    with Daemon(tmp_path / "state", config=config) as d:
        yield d


def _status(d: Daemon, name: str) -> str:
    """The daemon's health status for a name, or NOT_FOUND when it reports no such name."""
    assert d.channel is not None
    stub = health_pb2_grpc.HealthStub(d.channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return "NOT_FOUND"
        raise
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _until(check: Callable[[], bool], what: str, seconds: float = WITHIN) -> None:
    """Poll until check() holds; fail naming what did not happen in time."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {seconds}s"
        time.sleep(0.05)


def _healthcheck(d: Daemon, *flags: str) -> subprocess.CompletedProcess[str]:
    """`keybroker healthcheck` against the daemon's socket."""
    return subprocess.run(
        [sys.executable, "-m", "broker", "healthcheck", "--socket", str(d.socket), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )


def _up(d: Daemon) -> float:
    return d.metric("keybroker_backend_up", backend="vault-transit")


class TestBackendHealth:
    """Per-backend health names, metrics and the deep healthcheck follow OpenBao."""

    def test_outage_and_recovery(self, bao, daemon):
        """OpenBao stops: the backend goes NOT_SERVING and back, liveness stays SERVING."""
        _until(lambda: _status(daemon, VAULT) == "SERVING", "vault probed up")
        assert _status(daemon, LOCAL) == "SERVING"
        assert _up(daemon) == 1
        assert daemon.metric("keybroker_backend_probe_seconds", backend="vault-transit") > 0
        deep = _healthcheck(daemon, "--deep")
        assert deep.returncode == 0, deep.stdout + deep.stderr
        assert "backend vault-transit: SERVING" in deep.stdout.splitlines()
        bao.stop()
        try:
            _until(lambda: _status(daemon, VAULT) == "NOT_SERVING", "vault reported down")
            assert _up(daemon) == 0
            deep = _healthcheck(daemon, "--deep")
            assert deep.returncode == 1
            lines = deep.stdout.splitlines()
            assert "backend vault-transit: NOT_SERVING" in lines
            assert "backend local: SERVING" in lines
            assert "daemon: SERVING" in lines
            plain = _healthcheck(daemon)
            assert (plain.returncode, plain.stdout.strip()) == (0, "SERVING")
            assert _status(daemon, ENVELOPE) == "SERVING", "the local key still works"
            sealed = daemon.envelope.Encrypt(pb.EncryptRequest(key="on-local", plaintext=b"x"))
            assert sealed.ciphertext
        finally:
            bao.start()
        _until(lambda: _status(daemon, VAULT) == "SERVING", "vault reported up again")
        assert _up(daemon) == 1
        deep = _healthcheck(daemon, "--deep")
        assert deep.returncode == 0, deep.stdout + deep.stderr

    def test_hung_kms_is_cut_by_the_probe_timeout(self, bao, daemon):
        """A frozen OpenBao (connections hang) is reported down once probes time out."""
        _until(lambda: _status(daemon, VAULT) == "SERVING", "vault probed up")
        bao.suspend()
        try:
            _until(lambda: _status(daemon, VAULT) == "NOT_SERVING", "frozen vault reported down")
            assert _status(daemon, "") == "SERVING"
            took = daemon.metric("keybroker_backend_probe_seconds", backend="vault-transit")
            assert took < 1.5, "cut by the probe's 0.5 s timeout, not the call's 2 s deadline"
        finally:
            bao.resume()
        _until(lambda: _status(daemon, VAULT) == "SERVING", "thawed vault reported up")
        down = [line for line in daemon.log().splitlines() if '"backend_down"' in line]
        assert down
        assert '"reason": "TIMEOUT"' in down[0]


class TestEnvelopeService:
    """With every envelope key on a down backend, the envelope service is NOT_SERVING."""

    def test_only_key_down(self, bao, tmp_path):
        """The service follows Vault; the overall status does not (liveness must not kill)."""
        config = _config(tmp_path / "keybroker.toml", bao, local_key=False)
        with Daemon(tmp_path / "state", config=config) as d:
            _until(lambda: _status(d, VAULT) == "SERVING", "vault probed up")
            assert _status(d, ENVELOPE) == "SERVING"
            bao.stop()
            try:
                _until(lambda: _status(d, ENVELOPE) == "NOT_SERVING", "envelope service down")
                assert _status(d, "") == "SERVING"
                assert _healthcheck(d).returncode == 0
                deep = _healthcheck(d, "--deep")
                assert deep.returncode == 1
                assert f"service {ENVELOPE}: NOT_SERVING" in deep.stdout.splitlines()
            finally:
                bao.start()
            _until(lambda: _status(d, ENVELOPE) == "SERVING", "envelope service back")
