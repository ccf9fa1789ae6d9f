"""ServicerSpec: what the server needs to register one gRPC service on every listener.

Each servicer module exports a function returning its spec, so the composition root builds
the use cases and hands the specs to transport/server.py without touching gRPC itself.

`ServicerSpec.register` runs the generated `add_…_to_server` against a stand-in for the
server that swaps each method's request decoder for one that never raises
(`rpc/calls.py` `request_reader`), so a request gRPC cannot decode still reaches the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from broker.rpc.calls import request_reader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import ModuleType

    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["ServicerSpec", "service_name"]

# (request streaming, response streaming) -> the handler's behaviour attribute and its factory
_KINDS: dict[tuple[bool, bool], tuple[str, Callable[..., Handler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def _guarded(handler: Handler, max_request_bytes: int) -> Handler:
    """The same method handler, with a request decoder that never raises."""
    behaviour, make = _KINDS[(handler.request_streaming, handler.response_streaming)]
    decode = handler.request_deserializer
    if decode is None:
        msg = "every generated method handler has a request deserializer"
        raise TypeError(msg)
    reader = request_reader(decode, max_request_bytes, stream=handler.request_streaming)
    return make(
        getattr(handler, behaviour),
        request_deserializer=reader,
        response_serializer=handler.response_serializer,
    )


class _GuardingRegistrar:
    """Stands in for the server while generated code registers one service."""

    def __init__(self, server: grpc.aio.Server, max_request_bytes: int) -> None:
        """Register on `server`, refusing requests over `max_request_bytes` in the pipeline."""
        self._server = server
        self._max = max_request_bytes
        self.registered = False

    def add_generic_rpc_handlers(
        self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Drop: the same handlers arrive by name through add_registered_method_handlers."""
        del handlers

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        """Register the guarded handlers both ways, as the generated code does."""
        guarded = {name: _guarded(h, self._max) for name, h in handlers.items()}
        generic = grpc.method_handlers_generic_handler(service, guarded)
        self._server.add_generic_rpc_handlers((generic,))
        # grpc-stubs predates this method (grpcio >= 1.63 has it)
        self._server.add_registered_method_handlers(service, guarded)  # type: ignore[attr-defined]
        self.registered = True


@dataclass(frozen=True, slots=True)
class ServicerSpec:
    """One gRPC service: its full name, its generated `add_…_to_server` and a servicer factory.

    The factory is called once per listener with that listener's identity resolver, so every
    listener's servicers resolve callers their own way.
    """

    name: str
    add: Callable[[Any, Any], None]
    make: Callable[[IdentityResolver, RpcMetrics], object]

    def register(
        self, servicer: object, server: grpc.aio.Server, *, max_request_bytes: int
    ) -> None:
        """Add the servicer to the server; bad requests reach its pipeline, never escape it."""
        registrar = _GuardingRegistrar(server, max_request_bytes)
        self.add(servicer, registrar)
        if not registrar.registered:
            msg = f"{self.name}: its generated code registered no method handlers by name"
            raise TypeError(msg)


def service_name(module: ModuleType, service: str) -> str:
    """The full name of a service in a generated module, as health and reflection report it."""
    return str(module.DESCRIPTOR.services_by_name[service].full_name)
