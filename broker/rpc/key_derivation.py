"""KeyDerivationServicer: the gRPC adapter of KeyDerivationService."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.rpc.calls import ServicerBase, unary
from broker.rpc.gen import key_derivation_pb2 as pb
from broker.rpc.gen import key_derivation_pb2_grpc
from broker.rpc.spec import ServicerSpec, service_name
from broker.services.kdf import HkdfItem

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics
    from broker.services.kdf import KeyDerivationService

__all__ = ["KeyDerivationServicer", "key_derivation_spec"]


class KeyDerivationServicer(ServicerBase, key_derivation_pb2_grpc.KeyDerivationServiceServicer):
    """Serves keybroker.v1.KeyDerivationService."""

    def __init__(
        self, service: KeyDerivationService, identity: IdentityResolver, metrics: RpcMetrics
    ) -> None:
        """Bind the use case to one listener."""
        super().__init__(identity, metrics)
        self._svc = service

    @unary("DeriveKeyHkdf")
    async def DeriveKeyHkdf(  # noqa: N802
        self, request: pb.DeriveKeyHkdfRequest, caller: Caller
    ) -> pb.DeriveKeyHkdfResponse:
        """HKDF-SHA256 from a named secret, info and context."""
        r = request
        item = HkdfItem(r.key, r.info, dict(r.context), r.salt, r.length)
        out = await self._svc.hkdf(caller, item)
        return pb.DeriveKeyHkdfResponse(
            derived_key=out.derived_key, key=out.key, key_version=out.key_version
        )

    @unary("DeriveKeyPbkdf2")
    async def DeriveKeyPbkdf2(  # noqa: N802
        self, request: pb.DeriveKeyPbkdf2Request, caller: Caller
    ) -> pb.DeriveKeyPbkdf2Response:
        """PBKDF2-HMAC-SHA256 of a password; returns the salt and iterations used."""
        r = request
        out = await self._svc.pbkdf2(caller, r.password, r.salt, r.iterations, r.length)
        return pb.DeriveKeyPbkdf2Response(
            derived_key=out.derived_key, salt=out.salt, iterations=out.iterations
        )


def key_derivation_spec(service: KeyDerivationService) -> ServicerSpec:
    """The spec BrokerServer registers: one servicer per listener, all around this use case."""
    return ServicerSpec(
        service_name(pb, "KeyDerivationService"),
        key_derivation_pb2_grpc.add_KeyDerivationServiceServicer_to_server,
        lambda identity, metrics: KeyDerivationServicer(service, identity, metrics),
    )
