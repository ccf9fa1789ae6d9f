"""PolicySource: the policy file in force, reloaded on SIGHUP or when the file changes.

A reload that fails (unreadable file, invalid TOML, a rule the loader refuses) keeps the
policy in force, so a broken edit leaves every decision as it was.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import structlog

from broker.errors import ConfigError
from broker.policy.loader import load_policy_file

if TYPE_CHECKING:
    from pathlib import Path

    from broker.policy.engine import PolicyHolder

__all__ = ["PolicySource"]

log = structlog.get_logger("keybroker.policy")
_WATCH_SECONDS = 1.0


class PolicySource:
    """Where the policy comes from; reloads it on SIGHUP or when the file changes."""

    def __init__(self, holder: PolicyHolder, path: Path | None, table: str | None = None) -> None:
        """Serve holder's policy; path None means a built-in policy that never reloads."""
        self.holder = holder
        self._path = path
        self._table = table
        self._stamp = self._current_stamp()
        self.reloads: Counter[str] = Counter()

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat() if self._path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino) if st else None

    def reload(self, reason: str) -> bool:
        """Load the file again; on any error keep the policy in force and log why."""
        if self._path is None:
            return False
        self._stamp = self._current_stamp()
        try:
            policy = load_policy_file(self._path, self._table)
        except ConfigError as exc:
            self.reloads["failed"] += 1
            log.error("policy_reload_failed", reason=reason, error=str(exc), kept="previous")  # noqa: TRY400 - the error text is the detail
            return False
        self.holder.replace(policy)
        self.reloads["ok"] += 1
        log.info("policy_reloaded", reason=reason, source=str(self._path), rules=len(policy.rules))
        return True

    async def watch(self, interval: float = _WATCH_SECONDS) -> None:
        """Poll the file's stat() and reload when it changes."""
        while True:
            await asyncio.sleep(interval)
            if self._path is not None and self._current_stamp() != self._stamp:
                self.reload("file_changed")
