"""Assembles and runs the gRPC servers: one grpc.aio server per listener, in one event loop.

Unix-socket facts this relies on (DESIGN §5): the socket is created by `add_insecure_port`,
so the umask around it gives mode 0660 with no window; an existing socket file would be
replaced silently even if a live daemon owns it, so an exclusive `flock` on a lock file
beside it is taken first; `stop()` unlinks the socket path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from broker.api.metrics import RpcMetrics
from broker.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from broker.api.calls import IdentityResolver

__all__ = ["BrokerServer", "ServicerSpec", "UnixListener"]

log = structlog.get_logger("keybroker.server")
_MESSAGE_OVERHEAD = 1 << 20  # room for envelope headers and protobuf framing


@dataclass(frozen=True, slots=True)
class ServicerSpec:
    """One gRPC service: its full name, its generated `add_…_to_server` and a servicer factory.

    The factory is called once per listener with that listener's identity resolver, so every
    listener's servicers resolve callers their own way.
    """

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    make: Callable[[IdentityResolver, RpcMetrics], object]


@dataclass(frozen=True, slots=True)
class UnixListener:
    """A Unix socket with its file mode and the identity source for its callers."""

    path: Path
    identity: IdentityResolver
    mode: int = 0o660


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


class BrokerServer:
    """All listeners of one daemon, their health state and their lifecycle."""

    def __init__(
        self,
        services: Sequence[ServicerSpec],
        listeners: list[UnixListener],
        *,
        max_plaintext_bytes: int,
        max_concurrent_rpcs: int = 1000,
        metrics: RpcMetrics | None = None,
    ) -> None:
        """Prepare (but do not bind) every listener."""
        self._specs = tuple(services)
        self._listeners = listeners
        self._max_message = max_plaintext_bytes + _MESSAGE_OVERHEAD
        self._max_rpcs = max_concurrent_rpcs
        self.metrics = metrics or RpcMetrics()
        self._servers: list[grpc.aio.Server] = []
        self._health: list[HealthServicer] = []
        self._locks: list[int] = []

    @property
    def _service_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self._specs)

    def _build(self, listener: UnixListener) -> grpc.aio.Server:
        options = [
            ("grpc.max_receive_message_length", self._max_message),
            ("grpc.max_send_message_length", self._max_message),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=self._max_rpcs)
        for spec in self._specs:
            spec.add(spec.make(listener.identity, self.metrics), server)
        health_servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        self._health.append(health_servicer)
        return server

    def _bind(self, server: grpc.aio.Server, listener: UnixListener) -> None:
        """Bind the socket with the listener's mode already applied (umask, no window)."""
        umask = 0o777 & ~listener.mode
        previous = os.umask(umask)
        try:
            port = server.add_insecure_port(f"unix:{listener.path.absolute()}")
        finally:
            os.umask(previous)
        if port == 0:  # pragma: no cover - grpc reports bind failures this way
            msg = f"could not bind {listener.path}; check the directory and permissions"
            raise ConfigError(msg)

    async def start(self) -> None:
        """Lock, bind and start every listener, then report SERVING."""
        try:
            for listener in self._listeners:
                _prepare_dir(listener.path)
                self._locks.append(_lock(listener.path))
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

    async def stop(self, grace: float) -> None:
        """NOT_SERVING, let in-flight calls finish within grace, remove sockets, unlock."""
        for servicer in self._health:
            await servicer.enter_graceful_shutdown()
        for server in self._servers:
            await server.stop(grace)
        self._servers.clear()
        for listener in self._listeners[: len(self._locks)]:
            with contextlib.suppress(FileNotFoundError):
                listener.path.unlink()
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
