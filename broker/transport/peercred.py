"""Kernel-attested callers (SO_PEERCRED) for the peercred listener: attestation and naming.

grpc-python cannot see a Unix peer's credentials (docs/identity.md), so a front proxy
(transport/peercred_proxy.py) attests each connection once, at accept: uid, gid and pid from
SO_PEERCRED, supplementary groups from SO_PEERGROUPS, start time and executable from /proc. It
connects to the internal gRPC socket from a client socket bound to
`<internal dir>/<uid>.<gid>.<pid>.<start>.<n>` and files the attestation under that name in an
`Attestations` table shared with the resolver. Only the daemon's user can bind in that 0700
directory, so the name grpc reports as `peer()` is trustworthy; the resolver looks it up and
needs no file descriptor and no /proc access per call (docs/threat-model.md says why that is
as strong as re-reading /proc on every call).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from broker.errors import UnauthenticatedError
from broker.policy.authorizer import Caller
from broker.policy.engine import identify
from broker.policy.model import transport_name

if TYPE_CHECKING:
    from broker.policy.engine import PolicyHolder
    from broker.rpc.calls import Context

__all__ = [
    "INTERNAL_SOCKET",
    "Attestation",
    "Attestations",
    "PeercredIdentity",
    "attest",
    "internal_dir",
    "peer_uid",
    "process_start_time",
]

log = structlog.get_logger("keybroker.peercred")
INTERNAL_SOCKET = "grpc.sock"
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not named by Python 3.11
_GROUPS_FIRST_TRY = 64  # most processes have few groups; retried at the kernel's maximum
_NGROUPS_MAX = 65536
_STARTTIME_INDEX = 19  # field 22 of /proc/PID/stat, counted after "pid (comm)"


def internal_dir(public: Path) -> Path:
    """The 0700 directory beside a public socket that holds the internal one."""
    return public.with_name(f".{public.name}.d")


@dataclass(frozen=True, slots=True)
class Attestation:
    """What the kernel said about a connection's process when the proxy accepted it."""

    uid: int
    gid: int
    pid: int
    start_time: int
    groups: str = ""
    exe: str = ""
    caller: Caller = field(init=False, compare=False)

    def __post_init__(self) -> None:
        """Build the raw caller once, so a call only maps it through the policy."""
        attributes = {
            "uid": str(self.uid),
            "gid": str(self.gid),
            "groups": self.groups,
            "pid": str(self.pid),
            "start_time": str(self.start_time),
            "exe": self.exe,
        }
        raw = Caller("peercred", transport_name("uid", str(self.uid)), attributes)
        object.__setattr__(self, "caller", raw)

    def socket_name(self, serial: int) -> str:
        """The client socket name under which this attestation is filed."""
        return f"{self.uid}.{self.gid}.{self.pid}.{self.start_time}.{serial}"


def process_start_time(pid: int) -> int | None:
    """Clock ticks after boot at which pid started, or None when no such process is visible."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[_STARTTIME_INDEX])
    except (IndexError, ValueError):
        return None


def _exe(pid: int) -> str:
    """The process's executable; empty when unreadable (needs the same uid or CAP_SYS_PTRACE)."""
    try:
        return str(Path(f"/proc/{pid}/exe").readlink())
    except OSError:
        return ""


def _groups(sock: socket.socket) -> str:
    """The peer's supplementary groups when it connected, comma-separated (SO_PEERGROUPS)."""
    for count in (_GROUPS_FIRST_TRY, _NGROUPS_MAX):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * count)
        except OSError:  # ERANGE: more groups than asked for
            continue
        return ",".join(str(g) for g in sorted(struct.unpack(f"{len(raw) // 4}I", raw)))
    return ""


def _ucred(sock: socket.socket) -> tuple[int, int, int]:
    """pid, uid and gid of whoever connected sock, as the kernel recorded them then."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    """The uid that connected sock: enough to apply a per-uid cap before any /proc read."""
    return _ucred(sock)[1]


def attest(sock: socket.socket) -> Attestation | None:
    """Attest an accepted connection's process; None when its pid is not visible to the daemon.

    Uses one short-lived descriptor (/proc/PID/stat), so the proxy calls it only with headroom.
    """
    pid, uid, gid = _ucred(sock)
    if pid <= 0:  # the peer is in a pid namespace this daemon cannot see
        return None
    start = process_start_time(pid)
    if start is None:
        return None
    exe = _exe(pid)
    if process_start_time(pid) != start:  # the pid was reused while exe was read
        return None
    return Attestation(uid, gid, pid, start, _groups(sock), exe)


class Attestations:
    """The attestations of the live connections of one listener, by client socket name."""

    def __init__(self) -> None:
        """Empty: the proxy files one per relayed connection and removes it on close."""
        self._by_name: dict[str, Attestation] = {}

    def add(self, name: str, attestation: Attestation) -> None:
        """File a connection's attestation before it reaches the gRPC server."""
        self._by_name[name] = attestation

    def remove(self, name: str) -> None:
        """Forget a closed connection."""
        self._by_name.pop(name, None)

    def get(self, name: str) -> Attestation | None:
        """The attestation of a live connection."""
        return self._by_name.get(name)


class PeercredIdentity:
    """Resolves callers of a peercred listener from the attestation of their connection."""

    def __init__(self, directory: Path, policy: PolicyHolder, attestations: Attestations) -> None:
        """Accept only peers bound inside directory and attested by the proxy."""
        self._prefix = f"unix:{directory.absolute()}/"
        self._policy = policy
        self._attestations = attestations

    def _attestation(self, peer: str) -> Attestation:
        if not peer.startswith(self._prefix):
            log.warning("peercred_rejected", reason="not_through_proxy")
            raise UnauthenticatedError
        found = self._attestations.get(peer[len(self._prefix) :])
        if found is None:
            log.warning("peercred_rejected", reason="unknown_connection")
            raise UnauthenticatedError
        return found

    def __call__(self, context: Context) -> Caller:
        """The caller attested at accept, mapped through the policy in force."""
        return identify(self._policy.current, self._attestation(context.peer()).caller)
