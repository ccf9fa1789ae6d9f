"""Bounded timing loops, percentiles and the results table."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from _daemon import Counters

__all__ = ["Measured", "Plan", "Row", "Timing", "drive", "render_table"]

_NS = 1e9


@dataclass(frozen=True)
class Plan:
    """Bounds for one run: each scenario stops at its op count or its time, whichever first."""

    seconds: float
    unary_ops: int
    batch_items: int
    lease_ops: int
    stream_mib: int
    stream_ops: int
    warmup: int


FULL = Plan(
    seconds=4.0,
    unary_ops=20_000,
    batch_items=100,
    lease_ops=200_000,
    stream_mib=64,
    stream_ops=10,
    warmup=50,
)
QUICK = Plan(
    seconds=0.5,
    unary_ops=300,
    batch_items=100,
    lease_ops=2_000,
    stream_mib=8,
    stream_ops=1,
    warmup=5,
)


@dataclass(frozen=True)
class Timing:
    """Per-op latencies of one bounded loop, its wall time and this process's CPU time."""

    latencies_ns: list[int]
    seconds: float
    cpu_seconds: float

    @property
    def ops(self) -> int:
        """Operations completed."""
        return len(self.latencies_ns)

    def percentile(self, pct: float) -> float:
        """Nearest-rank percentile latency in seconds."""
        ordered = sorted(self.latencies_ns)
        rank = max(1, math.ceil(pct / 100 * len(ordered)))
        return ordered[rank - 1] / _NS


@dataclass(frozen=True)
class Measured:
    """A scenario's timing and what one op stands for (100 items, 64 MiB, ...)."""

    timing: Timing
    per_op: float
    unit: str


def drive(op: Callable[[], object], *, ops: int, seconds: float, threads: int = 1) -> Timing:
    """Run op on threads until ops calls are done in total or seconds have passed."""
    quota = max(1, ops // threads)
    start = time.perf_counter()
    deadline = start + seconds
    cpu_start = time.process_time()

    def worker() -> list[int]:
        done: list[int] = []
        for _ in range(quota):
            if time.perf_counter() >= deadline:
                break
            t0 = time.perf_counter_ns()
            op()
            done.append(time.perf_counter_ns() - t0)
        return done

    if threads == 1:
        latencies = worker()
    else:
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(worker) for _ in range(threads)]
            latencies = [ns for f in futures for ns in f.result()]
    elapsed = time.perf_counter() - start
    return Timing(latencies, elapsed, time.process_time() - cpu_start)


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    scenario: str
    ops: int
    rate: float
    unit: str
    p50_s: float | None
    p99_s: float | None
    client_cpu_s: float | None
    daemon: Counters
    errors: int = 0

    @classmethod
    def from_measured(cls, scenario: str, measured: Measured, daemon: Counters) -> Row:
        """Build a row from a Python-client scenario."""
        t = measured.timing
        return cls(
            scenario=scenario,
            ops=t.ops,
            rate=t.ops * measured.per_op / t.seconds if t.seconds > 0 else 0.0,
            unit=measured.unit,
            p50_s=t.percentile(50) if t.ops else None,
            p99_s=t.percentile(99) if t.ops else None,
            client_cpu_s=t.cpu_seconds,
            daemon=daemon,
        )


_NONE = "-"
_MS = 1e-3


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return _NONE
    if seconds < _MS:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _per_op(total: float | None, ops: int) -> str:
    return _duration(total / ops) if total is not None and ops else _NONE


def _rate(rate: float, unit: str) -> str:
    return f"{rate:,.1f} {unit}" if rate < 100 else f"{rate:,.0f} {unit}"  # noqa: PLR2004


HEADERS = (
    "Scenario",
    "Ops",
    "Throughput",
    "p50",
    "p99",
    "Client CPU/op",
    "Daemon CPU/op",
    "RPCs",
    "KMS calls",
    "Errors",
)


def _cells(row: Row) -> list[str]:
    return [
        row.scenario,
        f"{row.ops:,}",
        _rate(row.rate, row.unit),
        _duration(row.p50_s),
        _duration(row.p99_s),
        _per_op(row.client_cpu_s, row.ops),
        _per_op(row.daemon.cpu_seconds, row.ops),
        f"{row.daemon.rpcs:,.0f}",
        f"{row.daemon.kms_calls:,.0f}",
        f"{row.errors:,}",
    ]


def render_table(rows: Sequence[Row], *, markdown: bool) -> str:
    """The rows as an aligned text table, or as a Markdown table."""
    body = [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max([len(h), *(len(c[i]) for c in body)]) for i, h in enumerate(HEADERS)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(HEADERS), rule, *(line(c) for c in body)])
