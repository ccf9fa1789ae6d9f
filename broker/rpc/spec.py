"""ServicerSpec: what the server needs to register one gRPC service on every listener.

Each servicer module exports a function returning its spec, so the composition root builds
the use cases and hands the specs to transport/server.py without touching gRPC itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    import grpc

    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics

__all__ = ["ServicerSpec", "service_name"]


@dataclass(frozen=True, slots=True)
class ServicerSpec:
    """One gRPC service: its full name, its generated `add_…_to_server` and a servicer factory.

    The factory is called once per listener with that listener's identity resolver, so every
    listener's servicers resolve callers their own way.
    """

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    make: Callable[[IdentityResolver, RpcMetrics], object]


def service_name(module: ModuleType, service: str) -> str:
    """The full name of a service in a generated module, as health and reflection report it."""
    return str(module.DESCRIPTOR.services_by_name[service].full_name)
