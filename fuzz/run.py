"""Run every fuzz harness (fuzz/fuzz_*.py) for a time budget each, one after the other.

    .venv/bin/python fuzz/run.py [--seconds N] [NAME ...]     # make fuzz, make test-fuzz

Each harness prints one PASS or FAIL line (a failing input's path under fuzz/crashes/ among
them); the last line counts the harnesses that passed. The exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

FUZZ_DIR = Path(__file__).resolve().parent
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ_DIR.glob("fuzz_*.py"))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="budget per harness (default 60)")
    parser.add_argument("names", nargs="*", help=f"of {', '.join(HARNESSES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(HARNESSES))
    if unknown:
        parser.error(f"no harness named {', '.join(unknown)}; there are {', '.join(HARNESSES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harnesses; 1 when any of them failed."""
    args = _parse(argv)
    names = args.names or HARNESSES
    failed = []
    for name in names:
        argv_ = [
            sys.executable,
            str(FUZZ_DIR / f"fuzz_{name}.py"),
            f"-max_total_time={args.seconds}",
        ]
        try:
            code = subprocess.run(argv_, check=False).returncode
        except KeyboardInterrupt:
            print(f"fuzz: interrupted during {name}")
            return 130
        if code != 0:
            failed.append(name)
    verdict = f"fuzz: {len(names) - len(failed)} of {len(names)} harnesses passed"
    print(verdict + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
