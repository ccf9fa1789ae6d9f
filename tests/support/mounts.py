"""Small file systems the fault tests can make full or read-only while a daemon runs.

Mounting needs root, as creating OS users for the identity tests does; CI runs as root.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def mount(*args: str) -> None:
    """Run the mount command with these arguments; fail loudly when it refuses."""
    subprocess.run(["mount", *args], check=True, capture_output=True)


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount syntax, e.g. "1m") at mount_point, unmounted whatever happens."""
    if os.geteuid() != 0:
        pytest.fail("the fault tests mount file systems: run them as root (CI does)")
    mount_point.mkdir(exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-R", str(mount_point)], check=True, capture_output=True)


def fill(path: Path) -> None:
    """Write to `path` until its file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 << 10, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(size))
    finally:
        os.close(fd)
