"""Where a run happened: machine, software, revision, and CPU used by everyone else."""

from __future__ import annotations

import os
import platform
import resource
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

__all__ = ["machine_busy_seconds", "machine_header", "own_cpu_seconds"]

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    argv = ["git", "-C", str(REPO), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout


def _git_revision() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    return "unknown"


def _command() -> str:
    exe = Path(sys.executable)
    shown = exe.relative_to(Path.cwd()) if exe.is_relative_to(Path.cwd()) else exe
    return shlex.join([str(shown), *sys.argv])


def machine_header() -> list[tuple[str, str]]:
    """Date, command, revision, machine and software, as (label, value) pairs."""
    return [
        ("Date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Command", _command()),
        ("Revision", _git_revision()),
        ("Machine", f"nproc {os.cpu_count()}, {_cpu_model()}, {_memory()} RAM"),
        # Other work on the machine skews every number; this shows whether there was any.
        ("Load average before the run", f"{os.getloadavg()[0]:.2f} (1 min)"),
        (
            "Software",
            (
                f"Linux {platform.release()}, Python {platform.python_version()}, "
                f"grpcio {version('grpcio')}"
            ),
        ),
    ]


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent so far (all cores, every process, interrupts)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(since: float = 0.0) -> float:
    """CPU time of this process and its finished children (ghz), minus an earlier reading."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    return total - since
