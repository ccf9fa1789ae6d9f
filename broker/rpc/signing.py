"""SigningServicer: the gRPC adapter of SigningService (convert → service → convert)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.rpc.calls import ServicerBase, unary
from broker.rpc.gen import signing_pb2 as pb
from broker.rpc.gen import signing_pb2_grpc
from broker.rpc.items import item_results, only
from broker.rpc.spec import ServicerSpec, service_name
from broker.services.signing import SignItem, VerifyItem

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics
    from broker.services.signing import Signed, SigningService, Verified

__all__ = ["SigningServicer", "algorithm_enum", "signing_spec"]

_ALGORITHMS = {
    "ecdsa-p384-sha384": pb.SIGNATURE_ALGORITHM_ECDSA_P384_SHA384,
    "ecdsa-p256-sha256": pb.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256,
    "ed25519": pb.SIGNATURE_ALGORITHM_ED25519,
    "rsa-pss-3072-sha256": pb.SIGNATURE_ALGORITHM_RSA_PSS_3072_SHA256,
    "rsa-pss-4096-sha256": pb.SIGNATURE_ALGORITHM_RSA_PSS_4096_SHA256,
}


def algorithm_enum(name: str) -> pb.SignatureAlgorithm.ValueType:
    """The enum of a signature algorithm; UNSPECIFIED for keys that do not sign (RSA-OAEP)."""
    return _ALGORITHMS.get(name, pb.SIGNATURE_ALGORITHM_UNSPECIFIED)


def _sign(r: pb.SignRequest) -> SignItem:
    if r.WhichOneof("input") == "digest":
        return SignItem(r.key, r.digest, prehashed=True)
    return SignItem(r.key, r.data)


def _verify(r: pb.VerifyRequest) -> VerifyItem:
    prehashed = r.WhichOneof("input") == "digest"
    message = r.digest if prehashed else r.data
    return VerifyItem(r.key, message, r.signature, r.key_version, prehashed=prehashed)


def _signed(s: Signed) -> pb.SignResponse:
    return pb.SignResponse(
        signature=s.signature,
        key=s.key,
        key_version=s.key_version,
        algorithm=algorithm_enum(s.algorithm),
    )


def _verified(v: Verified) -> pb.VerifyResponse:
    return pb.VerifyResponse(key=v.key, key_version=v.key_version)


class SigningServicer(ServicerBase, signing_pb2_grpc.SigningServiceServicer):
    """Serves keybroker.v1.SigningService."""

    def __init__(
        self, service: SigningService, identity: IdentityResolver, metrics: RpcMetrics
    ) -> None:
        """Bind the use case to one listener."""
        super().__init__(identity, metrics)
        self._svc = service

    @unary("Sign")
    async def Sign(self, request: pb.SignRequest, caller: Caller) -> pb.SignResponse:  # noqa: N802
        """Sign one message or digest (a batch of one)."""
        return _signed(only(await self._svc.sign(caller, [_sign(request)])))

    @unary("Verify")
    async def Verify(self, request: pb.VerifyRequest, caller: Caller) -> pb.VerifyResponse:  # noqa: N802
        """Verify one signature (a batch of one); an invalid one is an error."""
        return _verified(only(await self._svc.verify(caller, [_verify(request)])))

    @unary("SignBatch")
    async def SignBatch(  # noqa: N802
        self, request: pb.SignBatchRequest, caller: Caller
    ) -> pb.SignBatchResponse:
        """Sign many messages; items fail independently."""
        results = await self._svc.sign(caller, [_sign(i) for i in request.items])
        return pb.SignBatchResponse(results=item_results(results, pb.SignBatchResult, _signed))

    @unary("VerifyBatch")
    async def VerifyBatch(  # noqa: N802
        self, request: pb.VerifyBatchRequest, caller: Caller
    ) -> pb.VerifyBatchResponse:
        """Verify many signatures; items fail independently."""
        results = await self._svc.verify(caller, [_verify(i) for i in request.items])
        return pb.VerifyBatchResponse(
            results=item_results(results, pb.VerifyBatchResult, _verified)
        )

    @unary("GetPublicKey")
    async def GetPublicKey(  # noqa: N802
        self, request: pb.GetPublicKeyRequest, caller: Caller
    ) -> pb.GetPublicKeyResponse:
        """The PEM public half of a signing or decryption key."""
        k = await self._svc.public_key(caller, request.key, request.key_version)
        return pb.GetPublicKeyResponse(
            pem=k.pem, key=k.key, key_version=k.key_version, algorithm=algorithm_enum(k.algorithm)
        )


def signing_spec(service: SigningService) -> ServicerSpec:
    """The spec BrokerServer registers: one servicer per listener, all around this use case."""
    return ServicerSpec(
        service_name(pb, "SigningService"),
        signing_pb2_grpc.add_SigningServiceServicer_to_server,
        lambda identity, metrics: SigningServicer(service, identity, metrics),
    )
