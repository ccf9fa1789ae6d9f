"""The peercred listener: a front proxy that carries SO_PEERCRED to the internal gRPC socket.

Public socket (configured mode/owner/group) → accept → SO_PEERCRED and the peer's start time →
a client socket bound to a name encoding them inside a 0700 directory (unlinked right after
connect; the kernel keeps the name for getpeername) → the internal gRPC socket in that
directory. Bytes are then relayed by two asyncio protocols with flow control in both
directions. Only the daemon's user can reach the internal socket: the directory is 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
from typing import TYPE_CHECKING, cast

import structlog

from broker.errors import ConfigError
from broker.transport.peercred import (
    INTERNAL_SOCKET,
    PeerCredentials,
    PeercredIdentity,
    internal_dir,
    process_start_time,
)
from broker.transport.server import lock_socket, prepare_socket_dir
from broker.transport.sockets import SUN_PATH_MAX, apply_ownership, bind_umask, private_dir

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

    from broker.policy.engine import PolicyHolder
    from broker.rpc.calls import IdentityResolver

__all__ = ["PeercredListener"]

log = structlog.get_logger("keybroker.peercred")
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_BACKLOG = 512


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


def _credentials(transport: asyncio.Transport) -> PeerCredentials | None:
    """SO_PEERCRED of an accepted connection and the peer's start time, if it is visible."""
    sock = transport.get_extra_info("socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    if pid <= 0:  # the peer is in a pid namespace this daemon cannot see
        return None
    start = process_start_time(pid)
    return None if start is None else PeerCredentials(uid, gid, pid, start)


class _Proxy:
    """Accepts on the public socket and relays each connection to the internal socket."""

    def __init__(self, directory: Path, max_connections: int) -> None:
        self._dir = directory
        self._max = max_connections
        self._serial = itertools.count()
        self._open: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def client_side(self) -> _Side:
        return _Connection(self).client

    def accepted(self, conn: _Connection) -> None:
        transport = conn.client.transport
        assert transport is not None  # noqa: S101 - called from connection_made
        creds = _credentials(transport)
        if creds is None or len(self._open) >= self._max:
            log.warning("peercred_refused", reason="no_credentials" if creds is None else "busy")
            conn.close()
            return
        self._open.add(conn)
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._connect(conn, creds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: _Connection, creds: PeerCredentials) -> None:
        loop = asyncio.get_running_loop()
        path = self._dir / creds.socket_name(next(self._serial))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
        self._open.discard(conn)

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
        max_connections: int = 4096,
    ) -> None:
        """Prepare (not bind) the listener at path."""
        self.path = path
        self._dir = internal_dir(path)
        self.identity: IdentityResolver = PeercredIdentity(self._dir, policy)
        self._mode, self._owner, self._group = mode, owner, group
        self._proxy = _Proxy(self._dir, max_connections)
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

    async def serve(self) -> None:
        """Start accepting on the public socket."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._proxy.client_side, sock=self._sock)
        log.info("listening", socket=str(self.path), mode=oct(self._mode), identity="peercred")

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
