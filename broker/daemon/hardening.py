"""Process hardening at start: no core dumps, not ptrace-able, not root unless told so.

A core dump or a debugger attached by the same user would expose DEKs and key material held
in memory; RLIMIT_CORE 0 stops dumps and PR_SET_DUMPABLE 0 also makes /proc/PID/mem and
ptrace unavailable to processes of the same user (root keeps both: see docs/threat-model.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from typing import TYPE_CHECKING

import structlog

from broker.errors import ConfigError

if TYPE_CHECKING:
    from broker.config.schema import Config

__all__ = ["check_user", "disable_core_dumps", "harden"]

log = structlog.get_logger("keybroker.hardening")
_PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    """RLIMIT_CORE 0 and PR_SET_DUMPABLE 0; raises OSError when the kernel refuses."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def check_user(cfg: Config, euid: int | None = None) -> None:
    """Refuse root unless `server.allow_root` or dev mode; warn when root is allowed."""
    if (os.geteuid() if euid is None else euid) != 0:
        return
    if not (cfg.server.allow_root or cfg.dev):
        msg = (
            "server.allow_root: refusing to run as root; run the daemon as a dedicated user "
            "(see docs/threat-model.md) or set server.allow_root = true"
        )
        raise ConfigError(msg)
    log.warning("running_as_root", reason="dev mode" if cfg.dev else "server.allow_root")


def harden(cfg: Config) -> None:
    """Everything above, before any key is loaded."""
    check_user(cfg)
    disable_core_dumps()
