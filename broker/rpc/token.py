"""TokenServicer: the gRPC adapter of TokenService."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.errors import InvalidRequestError
from broker.rpc.calls import ServicerBase, unary
from broker.rpc.gen import token_pb2 as pb
from broker.rpc.gen import token_pb2_grpc
from broker.rpc.spec import ServicerSpec, service_name

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics
    from broker.services.tokens import TokenEncoding, TokenService

__all__ = ["TokenServicer", "token_spec"]

_ENCODINGS: dict[int, TokenEncoding] = {
    pb.TOKEN_ENCODING_UNSPECIFIED: "urlsafe",
    pb.TOKEN_ENCODING_BYTES: "bytes",
    pb.TOKEN_ENCODING_HEX: "hex",
    pb.TOKEN_ENCODING_URLSAFE: "urlsafe",
}


class TokenServicer(ServicerBase, token_pb2_grpc.TokenServiceServicer):
    """Serves keybroker.v1.TokenService."""

    def __init__(
        self, service: TokenService, identity: IdentityResolver, metrics: RpcMetrics
    ) -> None:
        """Bind the use case to one listener."""
        super().__init__(identity, metrics)
        self._svc = service

    @unary("GenerateToken")
    async def GenerateToken(  # noqa: N802
        self, request: pb.GenerateTokenRequest, caller: Caller
    ) -> pb.GenerateTokenResponse:
        """Random bytes from the CSPRNG; URLSAFE text when no encoding is given."""
        encoding = _ENCODINGS.get(request.encoding)
        if encoding is None:
            raise InvalidRequestError("encoding must be TOKEN_ENCODING_BYTES, _HEX or _URLSAFE")
        token = self._svc.generate(caller, request.length, encoding)
        return pb.GenerateTokenResponse(token=token.raw, text=token.text)


def token_spec(service: TokenService) -> ServicerSpec:
    """The spec BrokerServer registers: one servicer per listener, all around this use case."""
    return ServicerSpec(
        service_name(pb, "TokenService"),
        token_pb2_grpc.add_TokenServiceServicer_to_server,
        lambda identity, metrics: TokenServicer(service, identity, metrics),
    )
