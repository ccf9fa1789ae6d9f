"""Added latency of the peercred front proxy: the same unary Encrypt through both listeners.

Starts a daemon with a fixed-identity Unix listener and a peercred listener on the same
policy and audit settings, makes blocking 1 KiB Encrypt calls alternately through each, and
prints median and p99 per call and the difference. Run: .venv/bin/python bench/peercred_latency.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

CALLS = 3000
CONFIG = """
[server]
state_dir = "{base}/state"
allow_root = true
[[listeners]]
kind = "unix"
path = "{base}/direct.sock"
identity = "bench"
[[listeners]]
kind = "peercred"
path = "{base}/peer.sock"
[keys.default]
uri = "local://default"
[[policy.rules]]
id = "bench"
callers = ["bench", "uid:*"]
keys = ["default"]
operations = ["encrypt"]
"""


def _stub(path: Path) -> envelope_pb2_grpc.EnvelopeServiceStub:
    return envelope_pb2_grpc.EnvelopeServiceStub(grpc.insecure_channel(f"unix:{path}"))


def _wait(path: Path) -> None:
    for _ in range(200):
        if path.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear")


def _time_calls(stubs: dict[str, envelope_pb2_grpc.EnvelopeServiceStub]) -> dict[str, list[float]]:
    request = pb.EncryptRequest(key="default", plaintext=os.urandom(1024))
    samples: dict[str, list[float]] = {name: [] for name in stubs}
    for _ in range(CALLS):
        for name, stub in stubs.items():
            started = time.perf_counter()
            stub.Encrypt(request)
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    """Start the daemon, warm up, measure, print a table."""
    base = Path(tempfile.mkdtemp(prefix="kbb", dir="/tmp"))
    (base / "kb.toml").write_text(CONFIG.format(base=base), encoding="utf-8")
    env = {**os.environ, "ECL_CRYPTO_LOCAL_MASTER_KEY": secrets.token_hex(32)}
    argv = [sys.executable, "-m", "broker", "serve", "--config", str(base / "kb.toml")]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait(base / "peer.sock")
        stubs = {"direct": _stub(base / "direct.sock"), "peercred": _stub(base / "peer.sock")}
        for stub in stubs.values():
            for _ in range(200):
                stub.Encrypt(pb.EncryptRequest(key="default", plaintext=b"warm"))
        samples = _time_calls(stubs)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        shutil.rmtree(base, ignore_errors=True)
    medians = {n: statistics.median(s) for n, s in samples.items()}
    for name, values in samples.items():
        p99 = statistics.quantiles(values, n=100)[98]
        print(f"{name:9} median {medians[name]:.3f} ms  p99 {p99:.3f} ms  ({len(values)} calls)")
    print(
        f"added by the proxy: {medians['peercred'] - medians['direct']:+.3f} ms per call (median)"
    )


if __name__ == "__main__":
    main()
