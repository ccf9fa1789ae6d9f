"""Benchmark keybroker: a dev daemon of its own, Python-client scenarios, then ghz load.

    .venv/bin/python bench/run.py [--quick] [--markdown FILE] [--no-ghz]

Every scenario stops at its op count or its time bound, whichever comes first. The daemon
runs in a temp dir and is stopped on exit, errors and Ctrl-C. Results are printed as one
table; docs/benchmarks.md explains the scenarios and records a run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _daemon import BenchDaemon, Counters
from _ghz import GhzUnavailableError, ensure_ghz, run_ghz
from _machine import machine_busy_seconds, machine_header, own_cpu_seconds
from _measure import FULL, QUICK, Plan, Row, render_table
from _scenarios import KIB, BenchCheckError, scenarios
from keybroker_client import Client, KeybrokerError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

_CLIENT_TIMEOUT = 120.0


@dataclass
class Report:
    """Everything one run produced, for the terminal and for --markdown."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short bounds: a smoke run")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the results")
    parser.add_argument("--no-ghz", action="store_true", help="skip the ghz (Go) load scenarios")
    parser.add_argument(
        "--ghz-concurrency",
        default="1,8,32",
        help="comma-separated ghz concurrency levels (default: 1,8,32)",
    )
    return parser.parse_args(argv)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _python_scenarios(daemon: BenchDaemon, plan: Plan, report: Report) -> None:
    with Client(daemon.socket, timeout=_CLIENT_TIMEOUT) as client:
        for scenario in scenarios(plan):
            _progress(f"running {scenario.name} ...")
            before = daemon.counters()
            try:
                measured = scenario.run(client, plan)
            except (KeybrokerError, BenchCheckError) as exc:
                report.failures.append(f"{scenario.name}: {type(exc).__name__}: {exc}")
                continue
            report.rows.append(
                Row.from_measured(scenario.name, measured, daemon.counters() - before)
            )


def _prepare_ghz(report: Report) -> Path | None:
    _progress("checking ghz (bench/ghz.sh) ...")
    try:
        return ensure_ghz()
    except GhzUnavailableError as exc:
        report.notes.append(f"ghz scenarios not run: {exc}")
        return None


def _ghz_scenarios(
    ghz: Path, daemon: BenchDaemon, plan: Plan, levels: list[int], report: Report
) -> None:
    seconds = max(1.0, plan.seconds)
    plaintext = os.urandom(KIB)
    for level in levels:
        name = f"ghz Encrypt 1 KiB, c={level}"
        _progress(f"running {name} for {seconds:.0f}s ...")
        before = daemon.counters()
        try:
            result = run_ghz(ghz, daemon, concurrency=level, seconds=seconds, plaintext=plaintext)
        except GhzUnavailableError as exc:
            report.failures.append(f"{name}: {exc}")
            continue
        report.rows.append(
            Row(
                scenario=name,
                ops=result.ok,
                rate=result.rps,
                unit="calls/s",
                p50_s=result.p50_s,
                p99_s=result.p99_s,
                client_cpu_s=result.cpu_seconds,
                daemon=daemon.counters() - before,
                errors=result.count - result.ok,
            )
        )


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or any(n < 1 for n in levels):
        raise SystemExit("--ghz-concurrency needs positive integers, e.g. 1,8,32")
    return levels


def _totals(total: Counters, seconds: float, others: float) -> list[str]:
    daemon = (
        f"Whole run ({seconds:.0f} s): the daemon served {total.rpcs:,.0f} RPCs, made "
        f"{total.kms_calls:,.0f} KMS calls and used {total.cpu_seconds:.1f} s of CPU."
    )
    rest = (
        f"Other processes on the machine used {others:.1f} s of CPU during the run "
        f"({others / seconds:.0%} of one core on average)."
    )
    return [daemon, rest]


def _audit_note(lines: int | None) -> str:
    if lines is None:
        return "The daemon wrote no audit log (STATE_DIR/audit.log absent)."
    return f"The daemon's audit log (STATE_DIR/audit.log) held {lines:,} lines at the end."


def _render(header: list[tuple[str, str]], report: Report, *, markdown: bool) -> str:
    if markdown:
        lines = [f"- {k}: `{v}`" if k == "Command" else f"- {k}: {v}" for k, v in header]
    else:
        lines = [f"{k}: {v}" for k, v in header]
    lines += ["", render_table(report.rows, markdown=markdown), ""]
    lines += [f"- {n}" if markdown else n for n in report.notes]
    lines += [f"- FAILED {f}" if markdown else f"FAILED {f}" for f in report.failures]
    return "\n".join(lines).rstrip() + "\n"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so that the daemon's context manager stops it."""
    del frame
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario once against a fresh daemon; 1 if any scenario failed."""
    args = _parse(argv)
    plan = QUICK if args.quick else FULL
    levels = _levels(args.ghz_concurrency)
    signal.signal(signal.SIGTERM, _on_sigterm)
    header = machine_header()
    report = Report()
    ghz = None if args.no_ghz else _prepare_ghz(report)
    own = own_cpu_seconds()
    started, busy = time.monotonic(), machine_busy_seconds()
    with BenchDaemon() as daemon:
        _progress(f"daemon pid {daemon.pid} on {daemon.socket}")
        _python_scenarios(daemon, plan, report)
        if ghz is not None:
            _ghz_scenarios(ghz, daemon, plan, levels, report)
        total = daemon.counters()
        others = machine_busy_seconds() - busy - own_cpu_seconds(since=own) - total.cpu_seconds
        report.notes[:0] = _totals(total, time.monotonic() - started, max(0.0, others))
        report.notes.insert(2, _audit_note(daemon.audit_lines()))
    print(_render(header, report, markdown=False), end="")
    if args.markdown:
        args.markdown.write_text(_render(header, report, markdown=True))
        _progress(f"wrote {args.markdown}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
