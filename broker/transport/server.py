"""Assembles and runs the gRPC servers: one grpc.aio server per listener, in one event loop.

Unix-socket facts this relies on (measured with grpcio 1.85): the socket is created by
`add_insecure_port`, so the umask around it gives mode 0660 with no window; an existing socket
file would be replaced silently even if a live daemon owns it, so an exclusive `flock` on a
lock file beside it is taken first; `stop()` unlinks the socket path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from broker.errors import ConfigError
from broker.rpc.calls import ServicerBase
from broker.rpc.metrics import RpcMetrics
from broker.transport.sockets import apply_ownership, bind_umask

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from broker.rpc.calls import CallObserver, IdentityResolver
    from broker.rpc.spec import ServicerSpec

__all__ = [
    "BrokerServer",
    "SelfBoundListener",
    "UnixListener",
    "lock_socket",
    "prepare_socket_dir",
]

log = structlog.get_logger("keybroker.server")
_MESSAGE_OVERHEAD = 1 << 20  # room for envelope headers and protobuf framing
# Messages up to this many times the largest valid request reach the pipeline, which refuses
# them with INVALID_ARGUMENT naming the setting; gRPC cuts off larger ones unbuffered.
_RECEIVE_FACTOR = 2


@dataclass(frozen=True, slots=True)
class UnixListener:
    """A Unix socket with its file mode, owner, group and the identity source for its callers.

    `owner`/`group` None keep the daemon's own; transport/sockets.py applies them in order.
    """

    path: Path
    identity: IdentityResolver
    mode: int = 0o660
    owner: int | None = None
    group: int | None = None


class SelfBoundListener(Protocol):
    """A listener that binds its gRPC server itself (peercred front proxy, mTLS over TCP)."""

    identity: IdentityResolver

    async def bind(self, server: grpc.aio.Server) -> None:
        """Lock and bind before the server starts; ConfigError when it cannot."""
        ...

    async def serve(self) -> None:
        """Start accepting once the server runs."""
        ...

    async def stop_accepting(self) -> None:
        """Take no new connections (in-flight calls continue)."""
        ...

    async def close(self) -> None:
        """Release everything after the server stopped."""
        ...


def _lock(path: Path) -> int:
    """Take the single-instance lock for a socket, or explain who holds it."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        msg = (
            f"another keybroker daemon is already serving {path} (it holds {lock_path}); "
            "stop it first or configure another socket"
        )
        raise ConfigError(msg) from None
    return fd


def _prepare_dir(path: Path) -> None:
    """Create the socket's directory 0750 if missing; refuse one that others may write."""
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o750, parents=True)
        directory.chmod(0o750)
    if directory.stat().st_mode & 0o002:
        msg = f"{directory} is writable by other users; run chmod o-w {directory}"
        raise ConfigError(msg)
    if directory.stat().st_uid not in (0, os.geteuid()):
        msg = f"{directory} belongs to another user, who could replace the socket; chown it"
        raise ConfigError(msg)


prepare_socket_dir = _prepare_dir
lock_socket = _lock


class BrokerServer:
    """All listeners of one daemon, their health state and their lifecycle."""

    def __init__(  # noqa: PLR0913 - keyword-only settings after the two collaborators
        self,
        services: Sequence[ServicerSpec],
        listeners: Sequence[UnixListener | SelfBoundListener],
        *,
        max_plaintext_bytes: int,
        max_concurrent_rpcs: int = 1000,
        metrics: RpcMetrics | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        """Prepare (but do not bind) every listener."""
        self._specs = tuple(services)
        self._listeners = listeners
        self._max_message = max_plaintext_bytes + _MESSAGE_OVERHEAD
        self._max_receive = _RECEIVE_FACTOR * self._max_message
        self._max_rpcs = max_concurrent_rpcs
        self.metrics = metrics or RpcMetrics()
        self._servers: list[grpc.aio.Server] = []
        self._health: list[HealthServicer] = []
        self._locks: list[int] = []
        self._observer = observer
        self._unix: list[UnixListener] = []
        self._bound: list[SelfBoundListener] = []

    @property
    def _service_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self._specs)

    def _build(self, listener: UnixListener | SelfBoundListener) -> grpc.aio.Server:
        options = [
            ("grpc.max_receive_message_length", self._max_receive),
            ("grpc.max_send_message_length", self._max_message),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=self._max_rpcs)
        for spec in self._specs:
            servicer = spec.make(listener.identity, self.metrics)
            if self._observer is not None and isinstance(servicer, ServicerBase):
                servicer.observer = self._observer
            spec.register(servicer, server, max_request_bytes=self._max_message)
        health_servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        self._health.append(health_servicer)
        return server

    def _bind(self, server: grpc.aio.Server, listener: UnixListener) -> None:
        """Bind with no window: umask, then owner/group, then mode (transport/sockets.py)."""
        owner, group = listener.owner, listener.group
        with bind_umask(listener.mode, owner=owner, group=group):
            port = server.add_insecure_port(f"unix:{listener.path.absolute()}")
        if port == 0:  # pragma: no cover - grpc reports bind failures this way
            msg = f"could not bind {listener.path}; check the directory and permissions"
            raise ConfigError(msg)
        apply_ownership(listener.path, listener.mode, owner=owner, group=group)

    async def start(self) -> None:
        """Lock, bind and start every listener, then report SERVING."""
        try:
            for listener in self._listeners:
                if not isinstance(listener, UnixListener):
                    await self._start_bound(listener)
                    continue
                _prepare_dir(listener.path)
                self._locks.append(_lock(listener.path))
                self._unix.append(listener)
                server = self._build(listener)
                self._bind(server, listener)
                await server.start()
                self._servers.append(server)
                log.info("listening", socket=str(listener.path), mode=oct(listener.mode))
        except BaseException:
            await self.stop(0)
            raise
        for servicer in self._health:
            await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            for name in self._service_names:
                await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def set_health(self, name: str, *, serving: bool) -> None:
        """Report one named component (for example the key store) on every listener's health."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for servicer in self._health:
            await servicer.set(name, status)

    async def _start_bound(self, listener: SelfBoundListener) -> None:
        server = self._build(listener)
        self._bound.append(listener)
        await listener.bind(server)
        await server.start()
        self._servers.append(server)
        await listener.serve()

    async def stop(self, grace: float) -> None:
        """NOT_SERVING, let in-flight calls finish within grace, remove sockets, unlock."""
        for servicer in self._health:
            await servicer.enter_graceful_shutdown()
        for bound in self._bound:
            await bound.stop_accepting()
        for server in self._servers:
            await server.stop(grace)
        self._servers.clear()
        for bound in self._bound:
            await bound.close()
        self._bound.clear()
        for listener in self._unix:
            with contextlib.suppress(FileNotFoundError):
                listener.path.unlink()
        self._unix.clear()
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
