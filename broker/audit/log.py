"""The audit log: processors, chain and sinks; one line per record, written before the reply.

Sinks: an append-only file (reopened on SIGHUP so log rotation works) and stdout. When a sink
cannot be written the record is not chained, and with `fail_closed` (the default) the
operation fails with AuditWriteError instead of being served unrecorded, as Vault does.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.audit.chain import Chain, ChainHead
from broker.audit.record import run_processors
from broker.errors import InternalError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

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

    def reopen(self) -> None:
        """Start a new file after rotation (no-op for streams)."""
        ...

    def close(self) -> None:
        """Release the sink."""
        ...


class FileSink:
    """An append-only 0600 file; one write(2) per line so concurrent readers see whole lines."""

    def __init__(self, path: Path) -> None:
        """Open (creating 0600) the file at path."""
        self.path = path
        self._fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, 0o600)

    def write(self, line: bytes) -> None:
        """Append the line; a short write is an error (the disk is full)."""
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"short write to {self.path}")

    def reopen(self) -> None:
        """Open the path again (a rotated file was renamed away) and close the old one."""
        fd = self._open()
        old, self._fd = self._fd, fd
        os.close(old)

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

    def reopen(self) -> None:
        """Streams are not rotated."""

    def close(self) -> None:
        """The stream belongs to the process."""


def last_line(path: Path) -> bytes | None:
    """The last complete line of a regular file, or None (empty, missing, or a device)."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
    except FileNotFoundError:
        return None
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    return lines[-1] or None


class AuditLog:
    """Writes audit records through the processors, the chain and every sink, in order."""

    def __init__(
        self,
        key: bytes,
        sinks: Sequence[LineSink],
        *,
        fail_closed: bool = True,
        head: ChainHead | None = None,
    ) -> None:
        """Chain records under key, continuing from head when given."""
        self._chain = Chain(key, head)
        self._sinks = tuple(sinks)
        self._fail_closed = fail_closed
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
            line, head = self._chain.seal(record)
            try:
                for sink in self._sinks:
                    sink.write(line)
            except OSError as exc:
                self.failures += 1
                log.exception("audit_write_failed")
                if self._fail_closed:
                    raise AuditWriteError from exc
                return
            self._chain.commit(head)
            self.written += 1

    def reopen(self) -> None:
        """Reopen file sinks after log rotation; the chain continues into the new file."""
        with self._lock:
            for sink in self._sinks:
                sink.reopen()

    def close(self) -> None:
        """Close every sink."""
        with self._lock:
            for sink in self._sinks:
                sink.close()
