"""Creating Unix sockets with exactly the configured mode, owner and group, and no window.

The order (docs/identity.md): bind under umask 0177, so the new socket is 0600 and only the
daemon's own user can connect; then chown to the configured owner and group; then chmod to
the configured mode. At every instant the set of users allowed to connect is the daemon's
user or a subset of the final set, never more. connect(2) checks write permission on the
socket file when it is called, so nobody connects "early" through a looser mode.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from broker.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["SUN_PATH_MAX", "apply_ownership", "bind_umask", "private_dir"]

SUN_PATH_MAX = 107  # bytes of a Unix socket path on Linux: sun_path[108] ends with a NUL
_PRIVATE = 0o177  # umask giving 0600 sockets


@contextlib.contextmanager
def bind_umask(mode: int, *, owner: int | None, group: int | None) -> Iterator[None]:
    """The umask to bind under: the final mode directly, or 0600 when ownership changes after."""
    umask = _PRIVATE if owner is not None or group is not None else 0o777 & ~mode
    previous = os.umask(umask)
    try:
        yield
    finally:
        os.umask(previous)


def apply_ownership(path: Path, mode: int, *, owner: int | None, group: int | None) -> None:
    """After the bind: chown/chgrp first, then chmod to the configured mode."""
    if owner is not None or group is not None:
        try:
            os.chown(path, -1 if owner is None else owner, -1 if group is None else group)
        except PermissionError:
            msg = (
                f"{path}: cannot give the socket to owner {owner} / group {group}; the daemon "
                "needs CAP_CHOWN for another owner, or membership of the group"
            )
            raise ConfigError(msg) from None
    os.chmod(path, mode)  # noqa: PTH101 - same call style as os.chown above


def private_dir(path: Path, *, clean: Callable[[Path], bool]) -> None:
    """Create (or check) a 0700 directory owned by this user; remove entries `clean` accepts."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    info = path.lstat()
    if not path.is_dir() or path.is_symlink() or info.st_uid != os.geteuid():
        msg = f"{path}: must be a directory owned by the daemon's user; remove it"
        raise ConfigError(msg)
    path.chmod(0o700)
    for entry in path.iterdir():
        if clean(entry):
            entry.unlink()
