"""Assembles and runs the gRPC servers: one grpc.aio server per listener, in one event loop.

Unix-socket facts this relies on (measured with grpcio 1.85): the socket is created by
`add_insecure_port`, so the umask around it gives mode 0660 with no window; an existing socket
file would be replaced silently even if a live daemon owns it, so an exclusive `flock` on a
lock file beside it is taken first; `stop()` unlinks the socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import gc
import inspect
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from broker.errors import ConfigError, ResourceExhaustedError
from broker.rpc.calls import UNDECODABLE, CallerShare, RefusedRequest, ServicerBase
from broker.rpc.metrics import RpcMetrics
from broker.transport.sockets import apply_ownership, bind_umask

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
    from pathlib import Path

    from broker.rpc.calls import CallObserver, IdentityResolver
    from broker.rpc.spec import ServicerSpec

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = [
    "BrokerServer",
    "CallLimits",
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
LATE_FIRST = "no request message arrived within server.first_message_seconds; the call was ended"
LATE_NEXT = "no stream message arrived within server.stream_idle_seconds; the stream was ended"
UNREAD = "the stream's replies were not read within server.stream_idle_seconds; it was ended"
OVER_BUDGET = (
    "the memory for requests in progress (server.request_memory_bytes) is in use; retry shortly"
)
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class CallLimits:
    """What one connection, one caller and one call may hold (docs/operations.md, "Slots").

    `max_inflight_per_caller` 0 means a quarter of `max_concurrent_rpcs`.
    """

    max_concurrent_rpcs: int = 1000
    max_streams_per_connection: int = 256
    first_message_seconds: float = 10.0
    stream_idle_seconds: float = 30.0
    max_inflight_per_caller: int = 0
    request_memory_bytes: int = 128 << 20

    @property
    def caller_share(self) -> int:
        """Calls one caller may have in progress on one listener."""
        return self.max_inflight_per_caller or max(1, self.max_concurrent_rpcs // 4)


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


class RequestBudget:
    """Bytes of request bodies the daemon holds at once; a request over it is refused at once.

    A request is always admitted when nothing else is held, so one of the largest valid size
    gets through however small the budget.
    """

    def __init__(self, limit: int) -> None:
        """Hold at most `limit` bytes of requests at once."""
        self._limit = limit
        self.in_use = 0

    @property
    def spent(self) -> bool:
        """True when no more may be reserved: new calls are refused before they are read."""
        return self.in_use >= self._limit

    def take(self, size: int, *, force: bool = False) -> bool:
        """Reserve `size` bytes; False when that would go over the budget (unless forced)."""
        if not force and self.in_use and self.in_use + size > self._limit:
            return False
        self.in_use += size
        return True

    def give(self, size: int) -> None:
        """Release a reservation at the end of its call."""
        self.in_use -= size


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 1 << 20  # fixed: glibc's moving threshold keeps freed request buffers
_TRIM_AFTER_BYTES = 16 << 20
_TRIM_DELAY_SECONDS = 1.0


def _libc() -> Any | None:  # noqa: ANN401 - a ctypes library handle
    """The C library's malloc tuning calls; None where it lacks them (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None)
        if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):
            return libc
    return None


class MemoryReturn:
    """Hands the memory of a burst of large requests back to the OS once the burst is over.

    Large blocks are served by mmap, so they go back as soon as they are freed. A second
    after the last large request, reference cycles that still hold finished calls' messages
    are collected and what the heap keeps is trimmed (off the event loop).
    """

    def __init__(self, budget: RequestBudget) -> None:
        """Tune malloc once per process; trim when `budget` is idle after a burst."""
        self._budget = budget
        self._libc = _libc()
        self._seen = 0
        self._timer: asyncio.TimerHandle | None = None
        if self._libc is not None:
            self._libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            self._libc.mallopt(_M_TRIM_THRESHOLD, _MMAP_THRESHOLD)

    def note(self, size: int) -> None:
        """A request of `size` bytes was held; schedule a trim after enough of them."""
        self._seen += size
        if self._libc is not None and self._seen >= _TRIM_AFTER_BYTES and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(_TRIM_DELAY_SECONDS, self._fire)

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        if self._budget.in_use:
            self._timer = loop.call_later(_TRIM_DELAY_SECONDS, self._fire)
            return
        self._timer, self._seen = None, 0
        gc.collect()  # finished calls' messages can sit in cycles until a full collection
        if self._libc is not None:
            loop.run_in_executor(None, self._libc.malloc_trim, 0)


class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg] # not generic at run time
    """Bounds what a call holds before and while the pipeline runs: time and request memory.

    Every method is served as one whose requests and replies stream, so the daemon, not gRPC,
    reads the first message (within `first_message_seconds`, then each next stream message
    within `stream_idle_seconds`) and writes the replies (a client that does not read one
    within `stream_idle_seconds` ends the call). A unary request's bytes, then its reply's,
    are held in the RequestBudget until the reply is written; when the budget is spent a new
    call is refused before its request is read. Methods of `pipelined` services get refusals
    as a RefusedRequest or a ResourceExhaustedError, so their pipeline audits them; other
    services' calls (health, reflection) are aborted here.
    """

    def __init__(
        self,
        limits: CallLimits,
        budget: RequestBudget,
        memory: MemoryReturn,
        pipelined: frozenset[str],
    ) -> None:
        """Guard the calls of one listener."""
        self._limits, self._budget, self._memory = limits, budget, memory
        self._pipelined = pipelined

    async def intercept_service(  # type: ignore[override] # None: no such method, as gRPC allows
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """The method's handler, wrapped so that its messages move under the limits."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        ours = handler_call_details.method.split("/")[1] in self._pipelined
        call = _Call(handler, ours=ours)
        run = self._stream_call if handler.request_streaming else self._unary_call
        return grpc.stream_stream_rpc_method_handler(
            functools.partial(run, call),
            request_deserializer=handler.request_deserializer if call.streaming_in else None,
            response_serializer=handler.response_serializer,
        )

    async def _unary_call(
        self, call: _Call, requests: AsyncIterator[bytes], context: Context
    ) -> None:
        """Read the one request within the deadline, holding its bytes until the reply is out."""
        if self._budget.spent:
            await call.refuse(context, RefusedRequest(OVER_BUDGET, retryable=True))
            return
        raw = await self._first(requests)
        if raw is None:  # cancelled, or ended with no message: gRPC itself runs no handler
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE)
        if not isinstance(raw, bytes):
            await call.refuse(context, raw)
            return
        if not self._budget.take(held := len(raw)):
            await call.refuse(context, RefusedRequest(OVER_BUDGET, retryable=True))
            return
        try:
            request = call.decode(raw)
            del raw
            outcome = await _result(call.behaviour(request, context))
            held += await self._deliver(call, outcome, context)
        finally:
            self._budget.give(held)
            self._memory.note(held)

    async def _first(self, requests: AsyncIterator[bytes]) -> bytes | RefusedRequest | None:
        """The first message, the refusal of a call that sent none in time, or None at its end."""
        try:
            async with asyncio.timeout(self._limits.first_message_seconds):
                return await anext(requests, None)
        except TimeoutError:
            return RefusedRequest(LATE_FIRST, retryable=True)

    async def _stream_call(
        self, call: _Call, requests: AsyncIterator[object], context: Context
    ) -> None:
        """Run a handler whose request stream ends the call when a message is late."""
        try:
            outcome = await _result(call.behaviour(self._paced(requests), context))
            await self._deliver(call, outcome, context)
        except ResourceExhaustedError as exc:
            if call.ours:
                raise
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)

    async def _paced(self, requests: AsyncIterator[object]) -> AsyncIterator[object]:
        """The requests; ResourceExhaustedError when the first or a next one is late."""
        seconds, late = self._limits.first_message_seconds, LATE_FIRST
        while True:
            try:
                async with asyncio.timeout(seconds):
                    request = await anext(requests, None)
            except TimeoutError:
                raise ResourceExhaustedError(late) from None
            if request is None:
                return
            yield request
            seconds, late = self._limits.stream_idle_seconds, LATE_NEXT

    async def _deliver(self, call: _Call, outcome: object, context: Context) -> int:
        """Write the reply or replies, each within the idle deadline; bytes of a unary reply."""
        if not call.streaming_out:
            size = outcome.ByteSize() if hasattr(outcome, "ByteSize") else 0
            self._budget.take(size, force=True)
            try:
                await self._write(context, outcome)
            except BaseException:
                self._budget.give(size)
                raise
            return int(size)
        if outcome is not None:  # a generator of replies; a coroutine handler wrote its own
            replies: AsyncGenerator[object] = outcome  # type: ignore[assignment]
            async for reply in replies:
                if not await self._write(context, reply):
                    with contextlib.suppress(ResourceExhaustedError, StopAsyncIteration):
                        await replies.athrow(ResourceExhaustedError(UNREAD))
                    break
        return 0

    async def _write(self, context: Context, reply: object) -> bool:
        """Write one reply; False, with the call aborted, when the client did not take it."""
        try:
            async with asyncio.timeout(self._limits.stream_idle_seconds):
                await context.write(reply)
        except TimeoutError:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, UNREAD)
            return False
        return True


class _Call:
    """One method's handler as CallGuard serves it."""

    def __init__(self, handler: Handler, *, ours: bool) -> None:
        """Take the behaviour and kind of `handler`."""
        self.behaviour = _behaviour(handler)
        self.streaming_in = bool(handler.request_streaming)
        self.streaming_out = bool(handler.response_streaming)
        self._decode = handler.request_deserializer
        self.ours = ours

    def decode(self, raw: bytes) -> object:
        """The request as the method's own decoder gives it."""
        return self._decode(raw) if self._decode is not None else raw

    async def refuse(self, context: Context, refusal: RefusedRequest) -> None:
        """Hand a refusal to the pipeline, which audits it; abort other services' calls."""
        if self.ours:
            await _result(self.behaviour(refusal, context))
            return
        code = (
            grpc.StatusCode.RESOURCE_EXHAUSTED
            if refusal.retryable
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        await context.abort(code, refusal.message)


def _behaviour(handler: Handler) -> Callable[..., Any]:
    """The servicer method behind a method handler, whatever its kind."""
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        if (fn := getattr(handler, kind)) is not None:
            return fn  # type: ignore[no-any-return]
    msg = "a method handler without a behaviour"
    raise TypeError(msg)


async def _result(outcome: object) -> object:
    """A unary handler's response, or a streaming handler's replies (None once written)."""
    if inspect.isawaitable(outcome):
        return await outcome
    return outcome


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
        limits: CallLimits | None = None,
        metrics: RpcMetrics | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        """Prepare (but do not bind) every listener."""
        self._specs = tuple(services)
        self._listeners = listeners
        self._max_message = max_plaintext_bytes + _MESSAGE_OVERHEAD
        self._max_receive = _RECEIVE_FACTOR * self._max_message
        self._limits = limits or CallLimits()
        self._budget = RequestBudget(self._limits.request_memory_bytes)
        self._memory = MemoryReturn(self._budget)
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
            ("grpc.max_concurrent_streams", self._limits.max_streams_per_connection),
        ]
        guard = CallGuard(self._limits, self._budget, self._memory, frozenset(self._service_names))
        server = grpc.aio.server(
            options=options,
            interceptors=(guard,),
            maximum_concurrent_rpcs=self._limits.max_concurrent_rpcs,
        )
        share = CallerShare(self._limits.caller_share)
        for spec in self._specs:
            servicer = spec.make(listener.identity, self.metrics)
            if isinstance(servicer, ServicerBase):
                servicer.share = share
                if self._observer is not None:
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
