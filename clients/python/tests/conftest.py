"""Fixtures shared by the client tests: a real keybroker daemon for integration tests."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

# clients/python/tests/conftest.py → the repository root, which holds the `broker` package.
REPO_ROOT = Path(__file__).resolve().parents[3]
STARTUP_SECONDS = 20.0
STOP_SECONDS = 15.0


def _serving(socket: Path) -> bool:
    """Ask the daemon's grpc.health.v1 service whether it is SERVING."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def _log_tail(log: Path) -> str:
    """The end of the daemon's output, to explain a failed start."""
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no output)"


def _wait_until_serving(process: subprocess.Popen[bytes], socket: Path, log: Path) -> None:
    """Wait for the socket and a SERVING health answer, failing with the daemon's output."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"keybroker daemon exited with {process.returncode}:\n{_log_tail(log)}")
        if socket.exists() and _serving(socket):
            return
        time.sleep(0.1)
    pytest.fail(f"keybroker daemon not SERVING after {STARTUP_SECONDS} s:\n{_log_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait for a clean exit; kill only if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("keybroker daemon ignored SIGTERM")


def _clean_env() -> dict[str, str]:
    """The test's environment without keybroker or seed settings, with the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYBROKER_", "ECL_CRYPTO_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _run_daemon(state: Path, socket: Path, args: list[str]) -> Iterator[Path]:
    """Start `python -m broker serve ARGS` in state, yield the socket once SERVING, then stop."""
    log = state / "daemon.log"
    argv = [sys.executable, "-m", "broker", "serve", *args]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=state, env=_clean_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_serving(process, socket, log)
        yield socket
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def daemon_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run `python -m broker serve --dev` in a fresh state directory; yield its socket."""
    state = tmp_path_factory.mktemp("kb")
    socket = state / "keybroker.sock"
    yield from _run_daemon(state, socket, ["--dev", "--state-dir", str(state)])


# Every key purpose the daemon serves, on the local backend.
KEYS_CONFIG = """
[server]
socket = "{socket}"
state_dir = "{state}"
allow_root = {allow_root}

[keys.default]
uri = "local://default"

[keys.signing]
uri = "local://signing"
purpose = "signing"

[keys.hmac]
uri = "local://hmac"
purpose = "hmac"

[keys.rsa]
uri = "local://rsa"
purpose = "asymmetric_decrypt"

[keys.derive]
uri = "local://derive"
purpose = "derivation"
"""


@pytest.fixture(scope="session")
def keys_daemon_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the daemon from a config file with every key purpose; yield its socket.

    Keys: default (envelope), signing (ECDSA P-384), hmac (HMAC-SHA256), rsa
    (RSA-OAEP decryption) and derive (HKDF secret).
    """
    state = tmp_path_factory.mktemp("kbkeys")
    socket = state / "keybroker.sock"
    config = state / "keybroker.toml"
    # CI containers often run tests as root, which the daemon refuses unless told otherwise.
    allow_root = "true" if os.geteuid() == 0 else "false"
    config.write_text(KEYS_CONFIG.format(socket=socket, state=state, allow_root=allow_root))
    yield from _run_daemon(state, socket, ["--config", str(config)])
