"""Per-call plumbing shared by every servicer: identity, request id, error mapping, logging.

Handlers receive the resolved `Caller` instead of the gRPC context, so identity is set at the
transport and never in handlers. Domain errors become status codes through rpc/status.py;
unexpected ones become INTERNAL "internal error", the detail logged under the request id.

gRPC decodes each request before any handler runs, and a decoder that raises escapes all of
this. So every service is registered with decoders from `request_reader`, which never raise:
bytes that are no message, or more than one call may carry, become a `RefusedRequest`, and the
wrappers below refuse it like any invalid request (INVALID_ARGUMENT, audited, one log line).
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError

from broker.errors import (
    BrokerError,
    InvalidRequestError,
    KmsAuthenticationError,
    ResourceExhaustedError,
)
from broker.rpc.status import REASON_METADATA_KEY, REQUEST_ID_METADATA_KEY, status_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from broker.policy.authorizer import Caller
    from broker.rpc.metrics import RpcMetrics

__all__ = [
    "OVER_SHARE",
    "UNDECODABLE",
    "UNOBSERVED",
    "CallObserver",
    "CallerShare",
    "IdentityResolver",
    "ObservedCall",
    "RefusedRequest",
    "ServicerBase",
    "request_reader",
    "streaming",
    "unary",
]

log = structlog.get_logger("keybroker.rpc")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S", bound="ServicerBase")
Context = grpc.aio.ServicerContext[Any, Any]
UNDECODABLE = "request could not be decoded"
OVER_SHARE = (
    "this caller has server.max_inflight_per_caller calls in progress on this listener; "
    "retry when one has finished"
)


@dataclass(frozen=True, slots=True)
class RefusedRequest:
    """What a handler gets instead of a request gRPC could not give it; the wrappers refuse it.

    `retryable` marks a refusal for want of time or memory (RESOURCE_EXHAUSTED) rather than
    for what the request holds (INVALID_ARGUMENT).
    """

    message: str
    retryable: bool = False


def _too_large(size: int, max_bytes: int, *, stream: bool) -> str:
    """The refusal of a message over what one call may carry, naming the setting behind it."""
    what, unit, advice = (
        ("stream message", "message", "send smaller chunks")
        if stream
        else ("request", "call", "send less per call, or use EncryptStream for large payloads")
    )
    return (
        f"{what} is {size} bytes, over the {max_bytes} bytes one {unit} may carry "
        f"(server.max_plaintext_bytes plus framing); {advice}"
    )


def request_reader(
    decode: Callable[[bytes], object], max_bytes: int, *, stream: bool
) -> Callable[[bytes], object]:
    """A request decoder that never raises, so every bad request reaches the pipeline."""

    def read(data: bytes) -> object:
        if len(data) > max_bytes:
            return RefusedRequest(_too_large(len(data), max_bytes, stream=stream))
        try:
            return decode(data)
        except DecodeError:
            return RefusedRequest(UNDECODABLE)

    return read


def _usable(request: Req) -> Req:
    """The request itself; InvalidRequestError when the request reader refused it."""
    if isinstance(request, RefusedRequest):
        if request.retryable:
            raise ResourceExhaustedError(request.message)
        raise InvalidRequestError(request.message)
    return request


async def _usable_stream(requests: AsyncIterator[Req]) -> AsyncIterator[Req]:
    """The stream's requests, failing at the first one the request reader refused."""
    async for request in requests:
        yield _usable(request)


class CallerShare:
    """Calls each caller has in progress on one listener, so no caller holds all its slots.

    A cap of 0 lets every caller hold any number (the listener's own limit still applies).
    """

    def __init__(self, cap: int = 0) -> None:
        """Allow each caller at most `cap` calls at once."""
        self._cap = cap
        self._held: dict[tuple[str, str], int] = {}

    @contextlib.contextmanager
    def hold(self, caller: Caller) -> Iterator[None]:
        """Count one call of `caller` while inside; ResourceExhaustedError over its share."""
        key = (caller.kind, caller.name)
        held = self._held.get(key, 0)
        if self._cap and held >= self._cap:
            raise ResourceExhaustedError(OVER_SHARE)
        self._held[key] = held + 1
        try:
            yield
        finally:
            if self._held[key] == 1:
                del self._held[key]
            else:
                self._held[key] -= 1


class IdentityResolver(Protocol):
    """Resolves the caller of one call from what the transport saw."""

    def __call__(self, context: Context) -> Caller:
        """The caller; raises UnauthenticatedError when it cannot be established."""
        ...


class ObservedCall(Protocol):
    """One call as the audit trail and rate limits see it (see rpc/audit_calls.py)."""

    request_id: str

    def attest(self, caller: Caller) -> Caller:
        """Remember who is calling; returns the caller."""
        ...

    def flush(self) -> None:
        """Record decisions made so far (before a stream releases data)."""
        ...

    def end(self, code: str, response: object | None) -> None:
        """Record the finished call; raises when the record cannot be kept."""
        ...

    def fail(self, exc: BaseException) -> BaseException:
        """Record a failed call; the exception to report (an audit failure wins)."""
        ...

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """Trailing metadata for the reply: request id, retry-after-ms when limited."""
        ...


class CallObserver(Protocol):
    """Sees every call from start to reply."""

    def begin(self, method: str, request_id: str) -> ObservedCall:
        """Start observing one call."""
        ...


class _Unobserved:
    """The observer of servicers built without one: keeps the request id only."""

    def __init__(self, request_id: str = "") -> None:
        self.request_id = request_id

    def begin(self, method: str, request_id: str) -> _Unobserved:
        del method
        return _Unobserved(request_id)

    def attest(self, caller: Caller) -> Caller:
        return caller

    def flush(self) -> None:
        pass

    def end(self, code: str, response: object | None) -> None:
        del code, response

    def fail(self, exc: BaseException) -> BaseException:
        return exc

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((REQUEST_ID_METADATA_KEY, self.request_id),)


UNOBSERVED: CallObserver = _Unobserved()


class ServicerBase:
    """State every servicer needs: the listener's identity resolver and the RPC metrics.

    `observer` is the daemon's audit and rate-limit hook and `share` the per-caller cap of
    the listener's calls; BrokerServer sets both on each servicer it builds.
    """

    observer: CallObserver = UNOBSERVED
    share: CallerShare = CallerShare()

    def __init__(self, identity: IdentityResolver, metrics: RpcMetrics) -> None:
        """Bind the servicer to one listener's identity source."""
        self.identity = identity
        self.metrics = metrics


async def _fail(context: Context, method: str, call: ObservedCall, exc: BaseException) -> None:
    code, message, reason = status_for(exc)
    request_id = call.request_id
    if isinstance(exc, KmsAuthenticationError):
        log.error(
            "kms_credentials_refused",
            method=method,
            request_id=request_id,
            cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
            hint="the KMS refused the broker's credentials: check [backends] and KMS permissions",
        )
    elif isinstance(exc, BrokerError) and code != grpc.StatusCode.INTERNAL:
        log.info("rpc_failed", method=method, request_id=request_id, code=code.name, reason=reason)
    else:
        log.error("rpc_internal_error", method=method, request_id=request_id, exc_info=exc)
    context.set_trailing_metadata(((REASON_METADATA_KEY, reason), *call.trailers()))
    await context.abort(code, message)


def unary(
    method: str,
) -> Callable[
    [Callable[[S, Req, Caller], Awaitable[Resp]]],
    Callable[[S, Req, Context], Awaitable[Resp]],
]:
    """Decorate a unary handler `(self, request, caller) -> response`."""

    def wrap(
        fn: Callable[[S, Req, Caller], Awaitable[Resp]],
    ) -> Callable[[S, Req, Context], Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(self: S, request: Req, context: Context) -> Resp:
            call, started = self.observer.begin(method, secrets.token_hex(8)), time.perf_counter()
            try:
                caller = call.attest(self.identity(context))
                with self.share.hold(caller):
                    response = await fn(self, _usable(request), caller)
                call.end("OK", response)
            except Exception as exc:
                failure = call.fail(exc)
                elapsed = time.perf_counter() - started
                self.metrics.observe(method, status_for(failure)[0].name, elapsed)
                await _fail(context, method, call, failure)
                raise AssertionError from exc  # pragma: no cover - abort always raises
            self.metrics.observe(method, "OK", time.perf_counter() - started)
            context.set_trailing_metadata(call.trailers())
            return response

        return handler

    return wrap


def streaming(
    method: str,
) -> Callable[
    [Callable[[S, AsyncIterator[Req], Caller], AsyncIterator[Resp]]],
    Callable[[S, AsyncIterator[Req], Context], AsyncIterator[Resp]],
]:
    """Decorate a bidirectional handler `(self, requests, caller)` that yields responses."""

    def wrap(
        fn: Callable[[S, AsyncIterator[Req], Caller], AsyncIterator[Resp]],
    ) -> Callable[[S, AsyncIterator[Req], Context], AsyncIterator[Resp]]:
        @functools.wraps(fn)
        async def handler(
            self: S, requests: AsyncIterator[Req], context: Context
        ) -> AsyncIterator[Resp]:
            call, started = self.observer.begin(method, secrets.token_hex(8)), time.perf_counter()
            try:
                caller = call.attest(self.identity(context))
                with self.share.hold(caller):
                    async for response in fn(self, _usable_stream(requests), caller):
                        call.flush()
                        yield response
                call.end("OK", None)
            except Exception as exc:  # noqa: BLE001 - every failure is mapped and logged
                failure = call.fail(exc)
                elapsed = time.perf_counter() - started
                self.metrics.observe(method, status_for(failure)[0].name, elapsed)
                await _fail(context, method, call, failure)
                return
            self.metrics.observe(method, "OK", time.perf_counter() - started)
            context.set_trailing_metadata(call.trailers())

        return handler

    return wrap
