"""AsymmetricServicer: the gRPC adapter of AsymmetricService (convert → service → convert)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.rpc.calls import ServicerBase, unary
from broker.rpc.gen import asymmetric_pb2 as pb
from broker.rpc.gen import asymmetric_pb2_grpc
from broker.rpc.spec import ServicerSpec, service_name

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics
    from broker.services.asymmetric import AsymmetricService

__all__ = ["AsymmetricServicer", "asymmetric_spec"]


class AsymmetricServicer(ServicerBase, asymmetric_pb2_grpc.AsymmetricServiceServicer):
    """Serves keybroker.v1.AsymmetricService."""

    def __init__(
        self, service: AsymmetricService, identity: IdentityResolver, metrics: RpcMetrics
    ) -> None:
        """Bind the use case to one listener."""
        super().__init__(identity, metrics)
        self._svc = service

    @unary("AsymmetricEncrypt")
    async def AsymmetricEncrypt(  # noqa: N802
        self, request: pb.AsymmetricEncryptRequest, caller: Caller
    ) -> pb.AsymmetricEncryptResponse:
        """RSA-OAEP-encrypt under the key's current public half."""
        out = await self._svc.encrypt(caller, request.key, request.plaintext, request.label)
        return pb.AsymmetricEncryptResponse(
            ciphertext=out.ciphertext, key=out.key, key_version=out.key_version
        )

    @unary("AsymmetricDecrypt")
    async def AsymmetricDecrypt(  # noqa: N802
        self, request: pb.AsymmetricDecryptRequest, caller: Caller
    ) -> pb.AsymmetricDecryptResponse:
        """RSA-OAEP-decrypt with one version's private half."""
        r = request
        out = await self._svc.decrypt(caller, r.key, r.ciphertext, r.label, r.key_version)
        return pb.AsymmetricDecryptResponse(plaintext=out.plaintext)


def asymmetric_spec(service: AsymmetricService) -> ServicerSpec:
    """The spec BrokerServer registers: one servicer per listener, all around this use case."""
    return ServicerSpec(
        service_name(pb, "AsymmetricService"),
        asymmetric_pb2_grpc.add_AsymmetricServiceServicer_to_server,
        lambda identity, metrics: AsymmetricServicer(service, identity, metrics),
    )
