"""Signed checkpoints of the chain's head, sent to a second sink so a cut tail shows.

Records removed cleanly from the end of the newest file leave a chain that verifies. So every
`checkpoint_seconds` (when the head moved) and at stop the daemon emits the head's seq and mac
with the time, signed with the audit key, as an `audit_checkpoint` event on its log stream and,
when configured, into a file elsewhere (replaced atomically). `audit verify --checkpoint`
then checks that the files reach that head with that mac.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from broker.audit.chain import ChainHead, is_hex64, tag
from broker.audit.record import canonical
from broker.keystore.file import write_private

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from broker.audit.log import AuditLog

__all__ = ["CHECKPOINT_EVENT", "Checkpoint", "Checkpointer", "find_checkpoint", "make_checkpoint"]

CHECKPOINT_EVENT = "audit_checkpoint"
_LABEL = b"keybroker/audit/checkpoint/v1\n"
log = structlog.get_logger("keybroker.audit")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A head (seq, mac) at a time, with its signature under the audit key."""

    seq: int
    mac: str
    time: str
    tag: str

    def signed_by(self, key: bytes) -> bool:
        """Whether the signature verifies under key (so the daemon holding it made it)."""
        return hmac.compare_digest(tag(key, _LABEL, self._signed()), self.tag)

    def _signed(self) -> dict[str, Any]:
        return {"mac": self.mac, "seq": self.seq, "time": self.time}

    def fields(self) -> dict[str, Any]:
        """The fields as logged and stored."""
        return {**self._signed(), "tag": self.tag}

    def line(self) -> bytes:
        """The JSON line a checkpoint file holds."""
        return canonical({"event": CHECKPOINT_EVENT, **self.fields()}) + b"\n"


def make_checkpoint(key: bytes, head: ChainHead, time: str) -> Checkpoint:
    """Sign head at time."""
    signed = {"mac": head.mac, "seq": head.seq, "time": time}
    return Checkpoint(head.seq, head.mac, time, tag(key, _LABEL, signed))


def _parse(line: str) -> Checkpoint | None:
    """The checkpoint a JSON line holds (extra fields, such as a log's, are ignored)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("event") != CHECKPOINT_EVENT:
        return None
    seq, mac, time, sig = (value.get(k) for k in ("seq", "mac", "time", "tag"))
    if type(seq) is not int or seq < 0 or not isinstance(time, str):
        return None
    if not is_hex64(mac) or not is_hex64(sig):
        return None
    return Checkpoint(seq, str(mac), time, str(sig))


def find_checkpoint(text: str) -> Checkpoint | None:
    """The last checkpoint in text: one JSON value, a checkpoint file, or a daemon's JSON log."""
    for line in reversed(text.splitlines()):
        checkpoint = _parse(line)
        if checkpoint is not None:
            return checkpoint
    return None


def _now() -> datetime:
    return datetime.now(UTC)


class Checkpointer:
    """Emits checkpoints of an audit log's head: periodically while running, and at stop."""

    def __init__(
        self,
        key: bytes,
        audit: AuditLog,
        file: Path | None,
        *,
        interval: float,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        """Sign audit's head under key; also replace file with each checkpoint when given."""
        self._key = key
        self._audit = audit
        self._file = file
        self._interval = interval
        self._clock = clock
        self._last: ChainHead | None = None
        self._lock = threading.Lock()  # the periodic emit runs in a worker thread
        self._stopped = False

    def emit(self, *, force: bool = False) -> Checkpoint | None:
        """Emit a checkpoint when the head moved since the last one (always with force)."""
        with self._lock:
            return None if self._stopped else self._emit(force=force)

    def stop(self) -> Checkpoint | None:
        """Emit the last checkpoint; none after it, so the audit log can be closed."""
        with self._lock:
            checkpoint = None if self._stopped else self._emit(force=True)
            self._stopped = True
        return checkpoint

    def _emit(self, *, force: bool) -> Checkpoint | None:
        head = self._audit.head
        if head is None or (head == self._last and not force):
            return None
        time = self._clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        checkpoint = make_checkpoint(self._key, head, time)
        try:
            self._audit.sync()
        except OSError:
            log.exception("audit_head_sync_failed")
        log.info(CHECKPOINT_EVENT, **checkpoint.fields())
        if self._file is not None:
            try:
                write_private(self._file, checkpoint.line())
            except OSError as exc:
                log.warning("audit_checkpoint_write_failed", file=str(self._file), error=str(exc))
        self._last = head
        return checkpoint

    async def run(self) -> None:
        """Emit every interval until cancelled (file writes and fsync off the event loop)."""
        while True:
            await asyncio.sleep(self._interval)
            await asyncio.to_thread(self.emit)
