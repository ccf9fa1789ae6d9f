"""Per-call plumbing shared by every servicer: identity, request id, error mapping, logging.

Handlers receive the resolved `Caller` instead of the gRPC context, so identity is set at the
transport and never in handlers. Domain errors become status codes through api/errors.py;
unexpected ones become INTERNAL "internal error", the detail logged under the request id.
"""

from __future__ import annotations

import functools
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
import structlog

from broker.api.errors import REASON_METADATA_KEY, REQUEST_ID_METADATA_KEY, status_for
from broker.errors import BrokerError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from broker.api.metrics import RpcMetrics
    from broker.policy.authorizer import Caller

__all__ = ["IdentityResolver", "ServicerBase", "streaming", "unary"]

log = structlog.get_logger("keybroker.rpc")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S", bound="ServicerBase")
Context = grpc.aio.ServicerContext[Any, Any]


class IdentityResolver(Protocol):
    """Resolves the caller of one call from what the transport saw."""

    def __call__(self, context: Context) -> Caller:
        """The caller; raises UnauthenticatedError when it cannot be established."""
        ...


class ServicerBase:
    """State every servicer needs: the listener's identity resolver and the RPC metrics."""

    def __init__(self, identity: IdentityResolver, metrics: RpcMetrics) -> None:
        """Bind the servicer to one listener's identity source."""
        self.identity = identity
        self.metrics = metrics


async def _fail(context: Context, method: str, request_id: str, exc: BaseException) -> None:
    code, message, reason = status_for(exc)
    if isinstance(exc, BrokerError) and code != grpc.StatusCode.INTERNAL:
        log.info("rpc_failed", method=method, request_id=request_id, code=code.name, reason=reason)
    else:
        log.error("rpc_internal_error", method=method, request_id=request_id, exc_info=exc)
    context.set_trailing_metadata(
        ((REASON_METADATA_KEY, reason), (REQUEST_ID_METADATA_KEY, request_id))
    )
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
            request_id, started = secrets.token_hex(8), time.perf_counter()
            try:
                response = await fn(self, request, self.identity(context))
            except Exception as exc:
                self.metrics.observe(method, status_for(exc)[0].name, time.perf_counter() - started)
                await _fail(context, method, request_id, exc)
                raise AssertionError from exc  # pragma: no cover - abort always raises
            self.metrics.observe(method, "OK", time.perf_counter() - started)
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
            request_id, started = secrets.token_hex(8), time.perf_counter()
            try:
                async for response in fn(self, requests, self.identity(context)):
                    yield response
            except Exception as exc:  # noqa: BLE001 - every failure is mapped and logged
                self.metrics.observe(method, status_for(exc)[0].name, time.perf_counter() - started)
                await _fail(context, method, request_id, exc)
                return
            self.metrics.observe(method, "OK", time.perf_counter() - started)

        return handler

    return wrap
