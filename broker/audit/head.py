"""The durable head: the chain's last seq and mac, kept outside the audit file, read at start.

A daemon that finds its audit file ending before this head knows the tail was cut: it says so
in its start record and continues numbering after the head, so no seq is ever used twice.

The file (`STATE_DIR/audit.head`, 0600, created atomically) holds two fixed-size slots, each a
JSON object signed with the audit key; every record's head goes into the older slot with one
pwrite(2), so a torn write leaves the other slot readable and the newest readable one wins.
It is as durable as the audit file itself (written, not fsynced, per record) and is fsynced at
every checkpoint and at stop. Someone who can rewrite both the audit file and the state
directory can roll both back; the checkpoints, kept elsewhere, show that (docs/audit.md).
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.audit.chain import ChainHead, is_hex64, tag
from broker.audit.record import START_EVENT
from broker.keystore.file import write_private

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["HeadStore", "Resumption", "resume"]

_LABEL = b"keybroker/audit/head/v1\n"
_SLOT = 256
_BLANK = b" " * (_SLOT - 1) + b"\n"


def _slot(key: bytes, generation: int, head: ChainHead) -> bytes:
    """One slot: the signed head and its generation, padded to the slot size.

    Written once per record, so built by hand: the same bytes as `canonical` of the fields.
    """
    signed = f'{{"mac":"{head.mac}","n":{generation},"seq":{head.seq}}}'.encode()
    sig = hmac.digest(key, _LABEL + signed, "sha256").hex()
    return (signed[:-1] + b',"tag":"' + sig.encode() + b'"}').ljust(_SLOT - 1) + b"\n"


def _read_slot(key: bytes, data: bytes) -> tuple[int, ChainHead] | None:
    """The generation and head of a slot whose signature verifies, else None."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or set(value) != {"mac", "n", "seq", "tag"}:
        return None
    n, seq, mac = value["n"], value["seq"], value["mac"]
    if not all(type(v) is int and v >= 0 for v in (n, seq)) or not is_hex64(mac):
        return None
    expected = tag(key, _LABEL, {"mac": mac, "n": n, "seq": seq})
    if not isinstance(value["tag"], str) or not hmac.compare_digest(expected, value["tag"]):
        return None
    return n, ChainHead(seq, mac)


class HeadStore:
    """The chain's head in a small file beside the daemon's state, updated with every record."""

    def __init__(self, path: Path, key: bytes) -> None:
        """Open (creating it atomically, 0600) the head file at path and read its head."""
        self.path = path
        self._key = key
        existed = path.exists()
        if not existed:
            write_private(path, _BLANK * 2)
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        data = [os.pread(self._fd, _SLOT, i * _SLOT) for i in range(2)]
        found = [s for s in (_read_slot(key, d) for d in data) if s is not None]
        newest = max(found, key=lambda s: s[0]) if found else None
        self._generation = newest[0] if newest else 0
        self.head: ChainHead | None = newest[1] if newest else None
        # a file that held heads, none of them signed under this key (another root key)
        self.unreadable = not found and any(d.strip() for d in data)

    def save(self, head: ChainHead) -> None:
        """Keep head in the older slot (OSError when the file cannot be written)."""
        generation = self._generation + 1
        os.pwrite(self._fd, _slot(self._key, generation, head), (generation % 2) * _SLOT)
        self._generation, self.head = generation, head

    def sync(self) -> None:
        """Force the head to the disk."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Sync and close the file."""
        try:
            self.sync()
        finally:
            os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where a starting daemon continues the chain, and the start record that says so."""

    head: ChainHead | None
    event: dict[str, Any] = field(default_factory=lambda: {"event": START_EVENT})
    lost: tuple[int, int] | None = None
    restarted: bool = False


def _start(head: ChainHead, **more: int | str) -> dict[str, Any]:
    return {"event": START_EVENT, "resume_seq": head.seq, "resume_mac": head.mac, **more}


def resume(
    file_head: ChainHead | None, durable: ChainHead | None, *, unverified_tail: bool
) -> Resumption:
    """Decide where the chain continues from the file's last record and the durable head.

    `file_head` is the head of the file's last line when it verifies; `unverified_tail` says
    the file has a last line that does not. The chain restarts only when nothing links.
    """
    if durable is None:
        return _without_durable(file_head, unverified_tail=unverified_tail)
    if file_head is not None and (file_head.seq > durable.seq or file_head == durable):
        return Resumption(file_head, _start(file_head))
    if file_head is None:
        if unverified_tail:
            return Resumption(durable, _start(durable, reason="the last line does not verify"))
        return Resumption(durable, _start(durable))
    lost = (min(file_head.seq + 1, durable.seq), durable.seq)
    return Resumption(durable, _start(durable, lost_from=lost[0], lost_to=lost[1]), lost=lost)


def _without_durable(file_head: ChainHead | None, *, unverified_tail: bool) -> Resumption:
    """No durable head (a first start, or a file from an older release): trust the file."""
    if file_head is not None:
        return Resumption(file_head, _start(file_head, reason="no durable head"))
    if unverified_tail:
        reason = "the last line does not verify and there is no durable head"
        return Resumption(None, {"event": START_EVENT, "reason": reason}, restarted=True)
    return Resumption(None)
