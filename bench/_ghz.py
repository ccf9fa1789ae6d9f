"""Load from ghz (Go): the daemon measured without a Python client in the way."""

from __future__ import annotations

import base64
import json
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _daemon import BenchDaemon

__all__ = ["GHZ", "GhzResult", "GhzUnavailableError", "ensure_ghz", "run_ghz"]

BENCH = Path(__file__).resolve().parent
GHZ = BENCH / ".bin" / "ghz"
_INSTALL = BENCH / "ghz.sh"
_PROTO_ROOT = BENCH.parent / "proto"
_INSTALL_TIMEOUT = 900.0
# Past its -z duration ghz only has to print; this covers connecting and the report.
_GRACE = 60.0


class GhzUnavailableError(RuntimeError):
    """ghz could not be installed or run; the message says why."""


def ensure_ghz() -> Path:
    """The pinned ghz binary, installed by bench/ghz.sh from the Go module proxy if missing."""
    try:
        proc = subprocess.run(
            ["/bin/bash", str(_INSTALL)],
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GhzUnavailableError(f"bench/ghz.sh failed: {exc}") from exc
    if proc.returncode != 0 or not GHZ.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
        raise GhzUnavailableError(f"bench/ghz.sh exited with {proc.returncode}:\n{tail}")
    return GHZ


@dataclass(frozen=True)
class GhzResult:
    """What ghz reported for one run, and the CPU time ghz itself used."""

    count: int
    ok: int
    rps: float
    p50_s: float | None
    p99_s: float | None
    cpu_seconds: float


def _percentile(report: dict[str, Any], pct: int) -> float | None:
    for entry in report.get("latencyDistribution") or []:
        if entry["percentage"] == pct:
            return float(entry["latency"]) / 1e9
    return None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _argv(
    ghz: Path, socket: Path, *, concurrency: int, seconds: float, plaintext: bytes
) -> list[str]:
    data = {
        "key": "default",
        "plaintext": base64.b64encode(plaintext).decode(),
        "context": {"tenant": "bench"},
    }
    return [
        str(ghz),
        "--insecure",
        # Not server reflection: ghz asks it for the file holding the method's full name, and
        # grpc-python answers from a upb descriptor pool that does not index method names.
        f"--import-paths={_PROTO_ROOT}",
        f"--proto={_PROTO_ROOT / 'keybroker/v1/envelope.proto'}",
        "--call=keybroker.v1.EnvelopeService.Encrypt",
        f"--data={json.dumps(data)}",
        f"--concurrency={concurrency}",
        "--connections=1",
        # One core for the load generator, leaving the other to the daemon on a 2-core machine.
        "--cpus=1",
        f"--duration={seconds}s",
        # Calls still in flight when the duration ends are cut off, not counted as errors.
        "--duration-stop=ignore",
        "--format=json",
        f"unix://{socket}",
    ]


def run_ghz(
    ghz: Path, daemon: BenchDaemon, *, concurrency: int, seconds: float, plaintext: bytes
) -> GhzResult:
    """Unary Encrypt of plaintext at a fixed concurrency for a fixed duration, one connection."""
    argv = _argv(ghz, daemon.socket, concurrency=concurrency, seconds=seconds, plaintext=plaintext)
    cpu_before = _children_cpu()
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + _GRACE, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GhzUnavailableError(f"ghz did not finish within {seconds + _GRACE:.0f}s") from exc
    if proc.returncode != 0:
        raise GhzUnavailableError(f"ghz exited with {proc.returncode}: {proc.stderr.strip()}")
    report: dict[str, Any] = json.loads(proc.stdout)
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    return GhzResult(
        count=int(report["count"]),
        ok=int(codes.get("OK", 0)),
        rps=float(report["rps"]),
        p50_s=_percentile(report, 50),
        p99_s=_percentile(report, 99),
        cpu_seconds=_children_cpu() - cpu_before,
    )
