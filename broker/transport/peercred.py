"""Kernel-attested callers (SO_PEERCRED) for the peercred listener: naming and attestation.

grpc-python cannot see a Unix peer's credentials (docs/identity.md), so a front proxy
(transport/peercred_proxy.py) reads SO_PEERCRED at accept and connects to the internal gRPC socket
from a client socket bound to `<internal dir>/<uid>.<gid>.<pid>.<start>.<n>`. Only the daemon's
user can bind in that 0700 directory, so the name grpc reports as `peer()` is trustworthy.
Each call re-reads the process's start time (/proc/PID/stat field 22) before and after
reading its executable and groups, so a pid reused by another process is UNAUTHENTICATED.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    "PeerCredentials",
    "PeercredIdentity",
    "internal_dir",
    "process_start_time",
]

log = structlog.get_logger("keybroker.peercred")
INTERNAL_SOCKET = "grpc.sock"
_NAME = re.compile(r"^(\d{1,10})\.(\d{1,10})\.(\d{1,10})\.(\d{1,20})\.(\d{1,20})$")
_STARTTIME_INDEX = 19  # field 22 of /proc/PID/stat, counted after "pid (comm)"


def internal_dir(public: Path) -> Path:
    """The 0700 directory beside a public socket that holds the internal one."""
    return public.with_name(f".{public.name}.d")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """What the kernel said at accept, plus the process's start time then."""

    uid: int
    gid: int
    pid: int
    start_time: int

    def socket_name(self, serial: int) -> str:
        """The client socket name that carries these credentials to the resolver."""
        return f"{self.uid}.{self.gid}.{self.pid}.{self.start_time}.{serial}"

    @classmethod
    def from_name(cls, name: str) -> PeerCredentials | None:
        """Parse a client socket name (None when it is not one of ours)."""
        match = _NAME.match(name)
        if match is None:
            return None
        uid, gid, pid, start, _ = (int(g) for g in match.groups())
        return cls(uid, gid, pid, start)


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


def _groups(pid: int) -> str:
    """The process's supplementary groups, comma-separated."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    for line in status.splitlines():
        if line.startswith("Groups:"):
            return ",".join(line.split()[1:])
    return ""


class PeercredIdentity:
    """Resolves callers of a peercred listener from the peer name the proxy chose."""

    def __init__(self, directory: Path, policy: PolicyHolder) -> None:
        """Accept only peers bound inside directory (the listener's internal directory)."""
        self._prefix = f"unix:{directory.absolute()}/"
        self._policy = policy

    def _credentials(self, peer: str) -> PeerCredentials:
        if not peer.startswith(self._prefix):
            log.warning("peercred_rejected", reason="not_through_proxy")
            raise UnauthenticatedError
        creds = PeerCredentials.from_name(peer[len(self._prefix) :])
        if creds is None:
            log.warning("peercred_rejected", reason="bad_peer_name")
            raise UnauthenticatedError
        return creds

    def _same_process(self, creds: PeerCredentials) -> None:
        if process_start_time(creds.pid) != creds.start_time:
            log.warning("peercred_rejected", reason="process_gone_or_pid_reused", pid=creds.pid)
            raise UnauthenticatedError

    def __call__(self, context: Context) -> Caller:
        """Attest the calling process, re-checking it is still the one that connected."""
        creds = self._credentials(context.peer())
        self._same_process(creds)
        exe, groups = _exe(creds.pid), _groups(creds.pid)
        self._same_process(creds)
        attributes = {
            "uid": str(creds.uid),
            "gid": str(creds.gid),
            "groups": groups,
            "pid": str(creds.pid),
            "start_time": str(creds.start_time),
            "exe": exe,
        }
        raw = Caller(
            kind="peercred", name=transport_name("uid", str(creds.uid)), attributes=attributes
        )
        return identify(self._policy.current, raw)
