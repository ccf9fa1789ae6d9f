"""Soak: a million mixed operations from two callers against one daemon; errors and memory.

    .venv/bin/python bench/soak.py [--ops N] [--concurrency C]     # make soak [SOAK_OPS=N]

The daemon (started by the shared launcher, tests/support/daemon.py) serves from a
configuration file: envelope keys `orders` and `pii`, signing keys `sig-p256` and `sig-ed`, HMAC
key `mac`, and two unix listeners, each its own caller (`app-a`, `app-b`), whose policy lets
each use only its own tenant's encryption context. Workers, at most C calls in flight, draw
operations at random: encrypt, decrypt (an envelope that caller sealed, checked against its
plaintext), batches of 10 of both, rewrap, sign and verify, HMAC and its check, tokens; key
`orders` is rotated 40 times along the way. One operation is one RPC.

It prints the operations done, errors by status and reason (goal: none), the daemon's resident
set size at start, after the warm-up and at the end, its growth after the warm-up (goal: under
20 MB), and operations per second. The exit code is 1 when a goal is missed. SOAK_OPS (or
--ops) sets the count, 1,000,000 by default; a progress line is drawn only on a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from _daemon import BenchDaemon, DaemonError
from _soak_mix import CONFIG, TENANTS, Tally, Workload
from keybroker_client import AsyncClient

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_OPS = 1_000_000
RSS_GROWTH_GOAL_MB = 20.0
ROTATIONS = 40
_CLIENT_TIMEOUT = 60.0
_TICK = 0.5
_MB = 1 << 20


def rss_mb(pid: int) -> float:
    """A process's resident set size (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise DaemonError(f"/proc/{pid}/status has no VmRSS line")


@dataclass
class Memory:
    """The daemon's resident set size (MiB) at the moments the verdict compares."""

    start: float
    warm: float | None = None
    end: float = 0.0
    peak: float = 0.0


@dataclass(frozen=True)
class Plan:
    """How much to do, and how."""

    ops: int
    concurrency: int
    seed: int

    @property
    def warm_up(self) -> int:
        """Operations before the RSS baseline is taken: caches and pools fill first."""
        return min(self.ops // 10, 100_000)

    def rotations(self) -> set[int]:
        """The operation numbers that rotate `orders` instead, evenly spread."""
        return {self.ops * k // (ROTATIONS + 1) for k in range(1, ROTATIONS + 1)} - {0}


def _progress(plan: Plan, tally: Tally, memory: Memory, started: float) -> None:
    """Redraw the progress line (terminals only)."""
    rate = tally.done / max(time.perf_counter() - started, 1e-9)
    line = (
        f"\rsoak: {tally.done:,}/{plan.ops:,} ({100 * tally.done // plan.ops}%) "
        f"{rate:,.0f} ops/s, errors {sum(tally.errors.values()):,}, rss {memory.peak:.1f} MB "
    )
    sys.stderr.write(line)
    sys.stderr.flush()


async def _watch(pid: int, plan: Plan, tally: Tally, memory: Memory, started: float) -> None:
    """Sample the daemon's RSS every tick: the peak, and the baseline once warm-up is done."""
    tty = sys.stderr.isatty()
    while True:
        rss = rss_mb(pid)
        memory.peak = max(memory.peak, rss)
        if memory.warm is None and tally.done >= plan.warm_up:
            memory.warm = rss
        if tty:
            _progress(plan, tally, memory, started)
        await asyncio.sleep(_TICK)


async def soak(daemon: BenchDaemon, run_dir: Path, plan: Plan) -> tuple[Tally, Memory, float]:
    """Run the plan against the daemon; what was done, the memory readings and the seconds."""
    tally, memory = Tally(), Memory(start=rss_mb(daemon.pid))
    clients = {t: AsyncClient(run_dir / f"app-{t}.sock", timeout=_CLIENT_TIMEOUT) for t in TENANTS}
    workload, rotations, numbers = (
        Workload(clients, tally, plan.seed),
        plan.rotations(),
        iter(range(plan.ops)),
    )

    async def worker() -> None:
        for n in numbers:  # one iterator shared by every worker: each number is run once
            await (workload.rotate() if n in rotations else workload.one())

    started = time.perf_counter()
    watch = asyncio.create_task(_watch(daemon.pid, plan, tally, memory, started))
    try:
        await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
        seconds = time.perf_counter() - started
    finally:
        watch.cancel()
        for client in clients.values():
            await client.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    memory.end = rss_mb(daemon.pid)
    memory.peak = max(memory.peak, memory.end)
    if memory.warm is None:
        memory.warm = memory.end
    return tally, memory, seconds


def report(plan: Plan, tally: Tally, memory: Memory, seconds: float) -> list[str]:
    """Print the figures; the goals missed (none: the soak passed)."""
    print(
        f"soak: {tally.done:,} operations ({tally.items:,} items) in {seconds:,.1f} s, "
        f"{tally.done / seconds:,.0f} ops/s; 2 callers, {plan.concurrency} calls in flight"
    )
    errors = sum(tally.errors.values())
    print(f"errors: {errors:,}")
    for label, n in tally.errors.most_common():
        print(f"    {label}: {n:,} (first: {tally.first[label]})")
    warm = memory.warm if memory.warm is not None else memory.end
    growth = memory.end - warm
    print(
        f"daemon RSS: start {memory.start:.1f} MB, after warm-up ({plan.warm_up:,} ops) "
        f"{warm:.1f} MB, end {memory.end:.1f} MB, peak {memory.peak:.1f} MB; "
        f"growth after warm-up {growth:+.1f} MB (goal < {RSS_GROWTH_GOAL_MB:.0f} MB)"
    )
    missed = []
    if errors:
        missed.append(f"{errors:,} errors (goal 0)")
    if growth >= RSS_GROWTH_GOAL_MB:
        missed.append(f"RSS grew {growth:.1f} MB after warm-up (goal < {RSS_GROWTH_GOAL_MB:.0f})")
    return missed


def _config(base: Path) -> Path:
    """Write the daemon's configuration (0600) under base."""
    path = base / "keybroker.toml"
    allow_root = "allow_root = true" if os.geteuid() == 0 else ""
    text = CONFIG.format(state=base / "state", run=base / "run", allow_root=allow_root)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_ops = int(os.environ.get("SOAK_OPS") or DEFAULT_OPS)
    parser.add_argument("--ops", type=int, default=default_ops, help="operations (SOAK_OPS)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight (16)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the operation mix (1)")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.concurrency < 1:
        parser.error("--ops and --concurrency must be at least 1")
    return args


def _run(daemon: BenchDaemon, base: Path, plan: Plan) -> list[str]:
    """Start the daemon, soak it, report; the goals missed."""
    daemon.start()
    before = daemon.counters()
    tally, memory, seconds = asyncio.run(soak(daemon, base / "run", plan))
    spent = daemon.counters() - before
    missed = report(plan, tally, memory, seconds)
    audit = daemon.state_dir / "audit.log"
    size = audit.stat().st_size / _MB if audit.exists() else 0.0
    per_op = 1000 * spent.cpu_seconds / max(tally.done, 1)
    print(
        f"daemon: {spent.cpu_seconds:,.0f} s CPU ({per_op:.2f} ms per operation), "
        f"{spent.kms_calls:,.0f} KMS calls, audit log {size:,.0f} MB"
    )
    if daemon.proc is None or daemon.proc.poll() is not None:
        missed.append("the daemon exited during the soak")
    return missed


def main(argv: Sequence[str] | None = None) -> int:
    """Soak a fresh daemon; 1 when a goal is missed."""
    args = _parse(argv)
    plan = Plan(args.ops, args.concurrency, args.seed)
    base = Path(tempfile.mkdtemp(prefix="kbsoak-", dir="/tmp"))  # short: socket paths
    (base / "run").mkdir()
    daemon = BenchDaemon(
        base / "state", config=_config(base), dev=False, socket=base / "run" / "app-a.sock"
    )
    try:
        missed = _run(daemon, base, plan)
    except KeyboardInterrupt:
        print("soak: interrupted")
        return 130
    except DaemonError as exc:
        print(f"soak: {exc}")
        return 1
    finally:
        daemon.close()
        shutil.rmtree(base, ignore_errors=True)
    print(f"soak: {'FAIL: ' + '; '.join(missed) if missed else 'PASS'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
