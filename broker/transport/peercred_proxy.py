"""The peercred listener: a front proxy that carries SO_PEERCRED to the internal gRPC socket.

Public socket (configured mode/owner/group) → accept → admission (fd headroom, the listener's
connection caps in total and per uid) → attestation of the peer process, once
(transport/peercred.py) → a client socket bound to a name encoding it inside a 0700 directory
(unlinked right after connect; the kernel keeps the name for getpeername) → the internal gRPC
socket in that directory. Bytes are then relayed by two asyncio protocols with flow control in
both directions. Only the daemon's user can reach the internal socket: the directory is 0700.
A refused connection is closed at accept; connections already relayed are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import resource
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import structlog

from broker.errors import ConfigError
from broker.transport.peercred import (
    INTERNAL_SOCKET,
    Attestation,
    Attestations,
    PeercredIdentity,
    attest,
    internal_dir,
    peer_uid,
)
from broker.transport.server import lock_socket, prepare_socket_dir
from broker.transport.sockets import SUN_PATH_MAX, apply_ownership, bind_umask, private_dir

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

    from broker.policy.engine import PolicyHolder
    from broker.rpc.calls import IdentityResolver

__all__ = ["FD_HEADROOM", "REFUSAL_REASONS", "ConnectionLimits", "PeercredListener"]

log = structlog.get_logger("keybroker.peercred")
_BACKLOG = 512
# New connections are shed while fewer descriptors than this are left below RLIMIT_NOFILE: room
# for the two more each relayed connection takes, the attestation's /proc read, the KMS, the
# audit file and the other listeners.
FD_HEADROOM = 64
REFUSAL_REASONS = ("fd_limit", "max_connections", "max_connections_per_uid", "no_credentials")
_FDS_PER_CONNECTION = 3  # the accepted socket, the upstream one, and gRPC's end of it
_LOG_INTERVAL = 10.0  # seconds between two log lines for the same refusal reason


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How many relayed connections a peercred listener keeps: in total and per uid."""

    total: int = 4096
    per_uid: int = 256


class _Side(asyncio.Protocol):
    """One end of a relayed connection; writes what it reads to the other end."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.conn.made(self)

    def data_received(self, data: bytes) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.write(data)

    def eof_received(self) -> bool:
        other = self.other.transport if self.other is not None else None
        if other is not None and other.can_write_eof():
            other.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self.conn.close()

    def pause_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()


class _Connection:
    """A client connection and its upstream connection to the internal socket."""

    def __init__(self, proxy: _Proxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.client.other, self.upstream.other = self.upstream, self.client
        self.closed = False
        self.name = ""  # the client socket name its attestation is filed under
        self.uid = -1

    def made(self, side: _Side) -> None:
        if side is self.client:
            self.proxy.accepted(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()
        self.proxy.forget(self)


class _RefusalLog:
    """Counts refused connections by reason; logs at most one line per reason per interval."""

    def __init__(self, path: Path, interval: float = _LOG_INTERVAL) -> None:
        self.counts: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self._path = str(path)
        self._interval = interval
        self._next: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def refused(self, reason: str, **detail: int) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        if now < self._next.get(reason, 0.0):
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return
        self._next[reason] = now + self._interval
        log.warning(
            "peercred_connections_refused",
            socket=self._path,
            reason=reason,
            refused_since_last_line=self._quiet.pop(reason, 0) + 1,
            **detail,
        )


class _Proxy:
    """Accepts on the public socket and relays each connection to the internal socket."""

    def __init__(self, directory: Path, limits: ConnectionLimits, public: Path) -> None:
        self._dir = directory
        self.limits = limits
        self.attestations = Attestations()
        self.refusals = _RefusalLog(public)
        self._serial = itertools.count()
        self._open: set[_Connection] = set()
        self._per_uid: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def client_side(self) -> _Side:
        return _Connection(self).client

    def _admit(self, sock: socket.socket) -> Attestation | None:
        """Attest a new connection, or count why it is refused (cheapest checks first)."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY and sock.fileno() >= soft - FD_HEADROOM:
            # descriptors are allocated lowest first: every lower number is in use
            self.refusals.refused("fd_limit", fd=sock.fileno(), limit=soft)
            return None
        if len(self._open) >= self.limits.total:
            self.refusals.refused("max_connections", limit=self.limits.total)
            return None
        uid = peer_uid(sock)
        if self._per_uid[uid] >= self.limits.per_uid:
            self.refusals.refused("max_connections_per_uid", uid=uid)
            return None
        attestation = attest(sock)
        if attestation is None:
            self.refusals.refused("no_credentials")
        return attestation

    def accepted(self, conn: _Connection) -> None:
        transport = conn.client.transport
        assert transport is not None  # noqa: S101 - called from connection_made
        attestation = self._admit(transport.get_extra_info("socket"))
        if attestation is None:
            conn.close()
            return
        conn.uid = attestation.uid
        self._open.add(conn)
        self._per_uid[attestation.uid] += 1
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._connect(conn, attestation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: _Connection, attestation: Attestation) -> None:
        loop = asyncio.get_running_loop()
        conn.name = attestation.socket_name(next(self._serial))
        path = self._dir / conn.name
        self.attestations.add(conn.name, attestation)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("peercred_upstream_failed", error=str(exc))
            conn.close()
            return
        sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
        try:
            if len(os.fsencode(path)) > SUN_PATH_MAX:
                raise OSError("peer socket path too long")  # noqa: TRY301 - one cleanup path
            sock.bind(str(path))
            try:
                await loop.sock_connect(sock, str(self._dir / INTERNAL_SOCKET))
            finally:
                path.unlink(missing_ok=True)
            if conn.closed:
                raise OSError("client left")  # noqa: TRY301 - one cleanup path
            await loop.create_unix_connection(lambda: conn.upstream, sock=sock)
        except OSError as exc:
            sock.close()
            log.warning("peercred_upstream_failed", error=str(exc))
            conn.close()
            return
        if conn.client.transport is not None:
            conn.client.transport.resume_reading()

    def forget(self, conn: _Connection) -> None:
        if conn.name:
            self.attestations.remove(conn.name)
        if conn in self._open:
            self._open.discard(conn)
            self._per_uid[conn.uid] -= 1
            if not self._per_uid[conn.uid]:
                del self._per_uid[conn.uid]

    def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._open):
            conn.close()


class PeercredListener:
    """A public Unix socket whose callers are identified by their kernel credentials."""

    def __init__(  # noqa: PLR0913 - the listener's configuration, all keyword-only
        self,
        path: Path,
        policy: PolicyHolder,
        *,
        mode: int = 0o660,
        owner: int | None = None,
        group: int | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        """Prepare (not bind) the listener at path."""
        self.path = path
        self._dir = internal_dir(path)
        self._proxy = _Proxy(self._dir, limits or ConnectionLimits(), path)
        self.identity: IdentityResolver = PeercredIdentity(
            self._dir, policy, self._proxy.attestations
        )
        self._mode, self._owner, self._group = mode, owner, group
        self._lock: int | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None

    async def bind(self, server: grpc.aio.Server) -> None:
        """Lock, bind the internal gRPC socket (0600 in a 0700 dir), then the public one."""
        prepare_socket_dir(self.path)
        self._lock = lock_socket(self.path)
        private_dir(self._dir, clean=lambda p: p.is_socket())
        with bind_umask(0o600, owner=None, group=None):
            port = server.add_insecure_port(f"unix:{(self._dir / INTERNAL_SOCKET).absolute()}")
        if port == 0:  # pragma: no cover - grpc reports bind failures this way
            raise ConfigError(f"could not bind {self._dir / INTERNAL_SOCKET}")
        self.path.unlink(missing_ok=True)  # stale: we hold the lock, no live daemon owns it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with bind_umask(self._mode, owner=self._owner, group=self._group):
            sock.bind(str(self.path))
        self._sock = sock
        apply_ownership(self.path, self._mode, owner=self._owner, group=self._group)
        sock.listen(_BACKLOG)
        sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature

    @property
    def refused(self) -> dict[str, int]:
        """Connections refused at accept so far, by reason (for the metrics)."""
        return dict(self._proxy.refusals.counts)

    async def serve(self) -> None:
        """Start accepting on the public socket."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._proxy.client_side, sock=self._sock)
        limits, soft = self._proxy.limits, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        log.info(
            "listening",
            socket=str(self.path),
            mode=oct(self._mode),
            identity="peercred",
            max_connections=limits.total,
            max_connections_per_uid=limits.per_uid,
            open_files_limit=soft,
        )
        if soft != resource.RLIM_INFINITY and _FDS_PER_CONNECTION * limits.total > soft:
            log.warning(
                "peercred_fd_limit_below_max_connections",
                socket=str(self.path),
                open_files_limit=soft,
                needed=_FDS_PER_CONNECTION * limits.total + FD_HEADROOM,
            )

    async def stop_accepting(self) -> None:
        """Close the public socket; relayed connections keep running until close()."""
        if self._server is not None:
            self._server.close()
        elif self._sock is not None:
            self._sock.close()
        if self._lock is not None:
            self.path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Drop relayed connections, remove the internal directory, unlock."""
        self._proxy.close_all()
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            for entry in self._dir.iterdir():
                entry.unlink()
            self._dir.rmdir()
        os.close(self._lock)
        self._lock = None
