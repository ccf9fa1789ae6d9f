"""The audit log: processors, chain and sinks; one line per record, written before the reply.

Sinks: an append-only file (reopened on SIGHUP so log rotation works) and stdout. When a sink
cannot be written the record is not chained, and with `fail_closed` (the default) the
operation fails with AuditWriteError instead of being served unrecorded, as Vault does.

A write cut short (a full disk) leaves part of a line in the file. The next write first ends
that line and records an `audit_repair` record naming its bytes, chained to the last whole
record, so `audit verify` can tell a repaired cut from an edit. A record's sequence number is
used up once any sink holds its whole line; the head is then kept in the HeadStore too.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.audit.chain import Chain, ChainHead
from broker.audit.record import REPAIR_EVENT, run_processors
from broker.errors import InternalError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from broker.audit.head import HeadStore

__all__ = [
    "AuditLog",
    "AuditWriteError",
    "FileSink",
    "LineSink",
    "StreamSink",
    "derive_audit_key",
    "last_line",
]

log = structlog.get_logger("keybroker.audit")
_AUDIT_KEY_INFO = b"keybroker/audit/hmac-sha256/v1"
_TAIL = 64 * 1024


def derive_audit_key(root_key: bytes) -> bytes:
    """The audit HMAC key: HKDF-SHA256 of the local root key, separated by its info string."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=_AUDIT_KEY_INFO).derive(root_key)


class AuditWriteError(InternalError):
    """The audit record could not be written, so the operation is not served."""


class LineSink(Protocol):
    """Somewhere audit lines go."""

    def write(self, line: bytes) -> None:
        """Write one whole line or raise OSError."""
        ...

    def repair(self) -> tuple[int, int] | None:
        """End a line an earlier write cut short; its (offset, length), or None when whole."""
        ...

    def reopen(self) -> None:
        """Start a new file after rotation (no-op for streams)."""
        ...

    def close(self) -> None:
        """Release the sink."""
        ...


def _unterminated(path: Path) -> int | None:
    """Where a regular file's last line starts when it has no newline (a cut write), else None."""
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        end = pos = fh.seek(0, os.SEEK_END)
        while pos > 0:
            start = max(0, pos - _TAIL)
            fh.seek(start)
            chunk = fh.read(pos - start)
            if pos == end and chunk.endswith(b"\n"):
                return None
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            pos = start
    return 0 if end else None


class FileSink:
    """An append-only 0600 file; one write(2) per line so concurrent readers see whole lines."""

    def __init__(self, path: Path) -> None:
        """Open (creating 0600) the file at path; note a cut last line left by an earlier run."""
        self.path = path
        self._fd = self._open()
        self._track()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, 0o600)

    def _track(self) -> None:
        """Start following the damage of the file just opened."""
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._damage = _unterminated(self.path) if self._regular else None
        self._ended = False  # whether a newline already ends the damaged bytes

    def write(self, line: bytes) -> None:
        """Append the line; a short write is an error (the disk is full) and leaves damage."""
        written = os.write(self._fd, line)
        if written != len(line):
            if written and self._regular:
                if self._damage is None:
                    self._damage = os.fstat(self._fd).st_size - written
                self._ended = False
            raise OSError(f"short write to {self.path}")
        self._damage = None

    def repair(self) -> tuple[int, int] | None:
        """End the cut line with a newline; the damaged bytes' offset and length, or None."""
        if self._damage is None:
            return None
        if not self._ended:
            if os.write(self._fd, b"\n") != 1:
                raise OSError(f"short write to {self.path}")
            self._ended = True
        return self._damage, os.fstat(self._fd).st_size - 1 - self._damage

    def reopen(self) -> None:
        """Open the path again (a rotated file was renamed away) and close the old one."""
        fd = self._open()
        old, self._fd = self._fd, fd
        os.close(old)
        self._track()

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


class StreamSink:
    """A binary stream such as stdout, flushed per line."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        """Write to stream (stdout by default)."""
        self._stream = stream or sys.stdout.buffer

    def write(self, line: bytes) -> None:
        """Write and flush the line."""
        self._stream.write(line)
        self._stream.flush()

    def repair(self) -> None:
        """A stream cannot be read back, so there is nothing it can repair."""

    def reopen(self) -> None:
        """Streams are not rotated."""

    def close(self) -> None:
        """The stream belongs to the process."""


def last_line(path: Path) -> bytes | None:
    """The last complete (newline-ended) line of a regular file, or None (none, or a device)."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
    except FileNotFoundError:
        return None
    whole = tail[: tail.rfind(b"\n") + 1]
    return whole.rstrip(b"\n").rsplit(b"\n", 1)[-1] or None


class AuditLog:
    """Writes audit records through the processors, the chain and every sink, in order."""

    def __init__(
        self,
        key: bytes,
        sinks: Sequence[LineSink],
        *,
        fail_closed: bool = True,
        head: ChainHead | None = None,
        store: HeadStore | None = None,
    ) -> None:
        """Chain records under key, continuing from head; keep each new head in store."""
        self._chain = Chain(key, head)
        self._sinks = tuple(sinks)
        self._fail_closed = fail_closed
        self._store = store
        self._store_failing = False
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.written = 0
        self.failures = 0

    @property
    def head(self) -> ChainHead | None:
        """The last record written."""
        return self._chain.head

    def write(self, event: dict[str, Any]) -> None:
        """Record one event; AuditWriteError when it cannot be kept and the log fails closed."""
        record = run_processors(event)
        with self._lock:
            try:
                self._catch_up()
                self._emit(record)
            except OSError as exc:
                self.failures += 1
                log.exception("audit_write_failed")
                if self._fail_closed:
                    raise AuditWriteError from exc

    def start(self, event: dict[str, Any]) -> bool:
        """Write a start record now; when the sinks refuse it, before the next record instead.

        A daemon must start even when its audit file is full, so this never raises.
        """
        with self._lock:
            self._pending.append(run_processors(event))
            try:
                self._catch_up()
            except OSError:
                self.failures += 1
                log.exception("audit_write_failed")
                return False
        return True

    def _catch_up(self) -> None:
        """Repair lines cut short and write held records, in order, before anything new."""
        for sink in self._sinks:
            damage = sink.repair()
            if damage is not None:
                offset, length = damage
                self._emit(
                    run_processors({"event": REPAIR_EVENT, "offset": offset, "length": length})
                )
                log.warning("audit_line_repaired", offset=offset, length=length)
        while self._pending:
            self._emit(self._pending[0])
            self._pending.pop(0)

    def _emit(self, record: dict[str, Any]) -> None:
        """Seal and write one record; its seq is used up once any sink holds the whole line."""
        line, head = self._chain.seal(record)
        reached = 0
        try:
            for sink in self._sinks:
                sink.write(line)
                reached += 1
        finally:
            if reached:
                self._commit(head)
        self.written += 1

    def _commit(self, head: ChainHead) -> None:
        self._chain.commit(head)
        if self._store is None:
            return
        try:
            self._store.save(head)
        except OSError:
            if not self._store_failing:
                log.exception("audit_head_write_failed", path=str(self._store.path))
            self._store_failing = True
        else:
            self._store_failing = False

    def sync(self) -> None:
        """Flush the durable head to disk (at checkpoints and at stop)."""
        if self._store is not None:
            with self._lock:
                self._store.sync()

    def reopen(self) -> None:
        """Reopen file sinks after log rotation; the chain continues into the new file."""
        with self._lock:
            for sink in self._sinks:
                sink.reopen()

    def close(self) -> None:
        """Close every sink and the head store."""
        with self._lock:
            for sink in self._sinks:
                sink.close()
            if self._store is not None:
                self._store.close()
