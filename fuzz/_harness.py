"""The driver every fuzz harness shares: a supervising parent, and a child that runs libFuzzer.

libFuzzer ends its process with `exit()` when the budget is spent or an input fails, so no
Python `finally` or `atexit` handler runs there. Each harness therefore runs twice: the parent
(what a user starts) makes a private work directory, starts what the harness needs (the RPC
harness's daemon), runs itself again as the child with the libFuzzer flags, and afterwards
checks, reports and cleans up. The child builds its seed corpus with the real code, then fuzzes.

    .venv/bin/python fuzz/fuzz_NAME.py [-max_total_time=SECONDS] [libFuzzer flags]
    .venv/bin/python fuzz/fuzz_NAME.py fuzz/crashes/NAME-crash-…     # replay one saved input

Inputs that fail are written to fuzz/crashes/ (artifact prefix `NAME-`); the inputs that found
new coverage stay in fuzz/corpus/NAME/ and seed the next run. Both directories are gitignored.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import atheris

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "CRASH_DIR",
    "FUZZ_DIR",
    "ROOT",
    "FindingError",
    "Harness",
    "Target",
    "instrumented",
    "main",
]

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parent
CRASH_DIR = FUZZ_DIR / "crashes"
CORPUS_DIR = FUZZ_DIR / "corpus"
_CHILD_ENV = "KEYBROKER_FUZZ_WORK"  # set in the child: its work directory
_LOG_TAIL = 60
_KILL_WAIT = 10.0
# Beyond the libFuzzer budget, the time the child may take to build seeds and replay the corpus.
_SETUP_ALLOWANCE = 180.0
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_RUNS = re.compile(r"stat::number_of_executed_units: (\d+)")
_SECONDS = re.compile(r"Done \d+ runs in (\d+) second")
_CORPUS = re.compile(r"corp: (\d+)/")
_BUDGET = re.compile(r"-max_total_time=(\d+)")


def instrumented(include: Sequence[str] = ("broker",)) -> contextlib.AbstractContextManager[object]:
    """Around a harness's imports of the code under test: coverage instrumentation (child only)."""
    if os.environ.get(_CHILD_ENV):
        return atheris.instrument_imports(include=list(include))
    return contextlib.nullcontext()


class FindingError(AssertionError):
    """A property the target checks does not hold for this input: libFuzzer saves the input."""


@dataclass(frozen=True)
class Target:
    """What the child fuzzes: one function of the raw input, and the seeds to start from."""

    test_one: Callable[[bytes], None]
    seeds: Sequence[bytes]


class Harness:
    """One fuzz target; subclasses set the name and limits and build the target in the child."""

    name = ""
    max_len = 4096  # bytes: the largest input libFuzzer makes
    rss_limit_mb = 1024  # the child is stopped (and the input saved) above this resident size
    timeout_seconds = 30  # one input running longer than this is a hang

    def target(self, work: Path) -> Target:
        """Build the function under test and its seeds; runs in the child."""
        raise NotImplementedError

    @contextlib.contextmanager
    def supervise(self, work: Path) -> Iterator[dict[str, str]]:
        """Around the child, in the parent: start what the target needs; yields the child's env."""
        del work
        yield {}

    def problems(self, work: Path) -> list[str]:
        """After the child, in the parent (inside `supervise`): what went wrong outside it."""
        del work
        return []

    def summary(self, work: Path) -> list[str]:
        """After the child, in the parent: lines worth printing under the result."""
        del work
        return []


def main(harness: Harness) -> int:
    """Fuzz in the child; in the parent, supervise the child and print one PASS or FAIL line."""
    work = os.environ.get(_CHILD_ENV)
    if work:
        _fuzz(harness, Path(work), sys.argv[1:])
    try:
        return _supervise(harness, sys.argv[1:])
    except KeyboardInterrupt:
        print(f"{harness.name}: interrupted", flush=True)
        return 130


def _fuzz(harness: Harness, work: Path, flags: list[str]) -> NoReturn:
    """Write the seeds, then hand over to libFuzzer, which never returns."""
    target = harness.target(work)
    seeds = work / "seeds"
    seeds.mkdir(exist_ok=True)
    for n, seed in enumerate(target.seeds):
        (seeds / f"seed-{n:04d}").write_bytes(seed)
    CRASH_DIR.mkdir(exist_ok=True)
    defaults = [
        f"-artifact_prefix={CRASH_DIR}/{harness.name}-",
        f"-max_len={harness.max_len}",
        f"-rss_limit_mb={harness.rss_limit_mb}",
        f"-timeout={harness.timeout_seconds}",
        "-keep_seed=1",  # a seed stays even when it adds no coverage the child can see
        "-print_final_stats=1",
    ]
    inputs: list[str] = []
    if not any(not flag.startswith("-") for flag in flags):  # no file or directory given
        corpus = CORPUS_DIR / harness.name
        corpus.mkdir(parents=True, exist_ok=True)
        inputs = [str(corpus), str(seeds)]
    atheris.Setup([sys.argv[0], *defaults, *flags, *inputs], target.test_one)
    atheris.Fuzz()
    raise AssertionError("atheris.Fuzz returned")  # pragma: no cover - it exits the process


def _supervise(harness: Harness, flags: list[str]) -> int:
    """Run the child in a private work dir; print the verdict; 0 only when nothing failed."""
    work = Path(tempfile.mkdtemp(prefix=f"kbfuzz-{harness.name}-", dir="/tmp"))
    problems: list[str] = []
    output = ""
    try:
        with harness.supervise(work) as env:
            code, output = _run_child(harness, work, env, flags)
            if code != 0:
                problems.append(_failure(code, output))
            problems += harness.problems(work)
        summary = harness.summary(work)
    except Exception as exc:  # noqa: BLE001 - a failed start or stop is this run's verdict
        problems.append(f"{type(exc).__name__}: {exc}")
        summary = []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_verdict(harness, output, problems, summary)
    return 1 if problems else 0


def _run_child(
    harness: Harness, work: Path, env: dict[str, str], flags: list[str]
) -> tuple[int, str]:
    """Run this script again as the libFuzzer child; its exit code and its whole output."""
    budget = _BUDGET.search(" ".join(flags))
    limit = int(budget.group(1)) + _SETUP_ALLOWANCE if budget else None
    log = work / "libfuzzer.log"
    child_env = {**os.environ, **env, _CHILD_ENV: str(work)}
    argv = [sys.executable, sys.argv[0], *flags]
    with log.open("wb") as out:
        child = subprocess.Popen(argv, env=child_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = child.wait(limit)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(_KILL_WAIT)
            code = -9
            with log.open("a") as note:
                note.write(f"\n{harness.name}: the child ran past {limit:.0f} s and was killed\n")
        except BaseException:  # Ctrl-C: libFuzzer got it too; never leave the child behind
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(_KILL_WAIT)
            child.kill()
            raise
    return code, log.read_text(errors="replace")


def _failure(code: int, output: str) -> str:
    """Name what the child reported: the saved input, or its exit code."""
    saved = _ARTIFACT.findall(output)
    if saved:
        path = Path(saved[-1]).resolve()
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        return f"failing input saved to {shown} (replay: .venv/bin/python {_script()} {shown})"
    return f"libFuzzer exited with {code} and saved no input"


def _script() -> str:
    """This harness's script, as a user in the repository root would type it."""
    path = Path(sys.argv[0]).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _print_verdict(harness: Harness, output: str, problems: list[str], summary: list[str]) -> None:
    """One PASS or FAIL line, the failures under it, and the log's tail when there are any."""
    runs, seconds, corpus = (r.findall(output) for r in (_RUNS, _SECONDS, _CORPUS))
    count = int(runs[-1]) if runs else 0
    stats = f"{count:,} input{'' if count == 1 else 's'}"
    if seconds:
        stats += f" in {seconds[-1]} s"
    if corpus:
        stats += f", corpus {corpus[-1]} in fuzz/corpus/{harness.name}/"
    if problems:
        tail = "\n".join(output.splitlines()[-_LOG_TAIL:])
        print(f"--- {harness.name}: last {_LOG_TAIL} lines of libFuzzer's output ---\n{tail}")
    print(f"{'FAIL' if problems else 'PASS'} {harness.name}: {stats}", flush=True)
    for line in [*problems, *summary]:
        print(f"    {line}", flush=True)
