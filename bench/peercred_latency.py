"""Added latency of the peercred front proxy: the same unary Encrypt through both listeners.

Starts a daemon with a fixed-identity Unix listener and a peercred listener on the same
policy and audit settings, makes blocking 1 KiB Encrypt calls alternately through each, and
prints median and p99 per call and the difference. Run: .venv/bin/python bench/peercred_latency.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from _daemon import Daemon

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


def _time_calls(stubs: dict[str, envelope_pb2_grpc.EnvelopeServiceStub]) -> dict[str, list[float]]:
    request = pb.EncryptRequest(key="default", plaintext=os.urandom(1024))
    samples: dict[str, list[float]] = {name: [] for name in stubs}
    for _ in range(CALLS):
        for name, stub in stubs.items():
            started = time.perf_counter()
            stub.Encrypt(request)
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def _measure(base: Path) -> dict[str, list[float]]:
    """Serve from the config in base through both listeners; the timings of each."""
    env = {"ECL_CRYPTO_LOCAL_MASTER_KEY": secrets.token_hex(32)}
    config, direct, peer = base / "kb.toml", base / "direct.sock", base / "peer.sock"
    with Daemon(base / "state", env, config=config, dev=False, socket=direct, metrics=False):
        stubs = {"direct": _stub(direct), "peercred": _stub(peer)}
        for stub in stubs.values():
            for _ in range(200):
                stub.Encrypt(pb.EncryptRequest(key="default", plaintext=b"warm"))
        return _time_calls(stubs)


def main() -> None:
    """Start the daemon, warm up, measure, print a table."""
    base = Path(tempfile.mkdtemp(prefix="kbb", dir="/tmp"))
    try:
        (base / "kb.toml").write_text(CONFIG.format(base=base), encoding="utf-8")
        samples = _measure(base)
    finally:
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
