"""HashingServicer: the gRPC adapter of HashingService and PasswordService."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.rpc.calls import ServicerBase, unary
from broker.rpc.gen import hashing_pb2 as pb
from broker.rpc.gen import hashing_pb2_grpc
from broker.rpc.items import item_results, only
from broker.rpc.spec import ServicerSpec, service_name
from broker.services.hashing import IndexItem, MacItem

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics
    from broker.services.hashing import Digest, HashingService, Index, Mac
    from broker.services.passwords import PasswordService

__all__ = ["HashingServicer", "hashing_spec"]


def _digest(d: Digest) -> pb.DigestResponse:
    return pb.DigestResponse(digest=d.digest, hex=d.hex)


def _mac(m: Mac) -> pb.ComputeHmacResponse:
    return pb.ComputeHmacResponse(mac=m.mac, key=m.key, key_version=m.key_version)


def _index_item(r: pb.BlindIndexRequest) -> IndexItem:
    return IndexItem(r.key, r.field, r.tenant, r.value, r.length)


def _index(i: Index) -> pb.BlindIndexResponse:
    return pb.BlindIndexResponse(index=i.index, key=i.key, key_version=i.key_version)


class HashingServicer(ServicerBase, hashing_pb2_grpc.HashingServiceServicer):
    """Serves keybroker.v1.HashingService."""

    def __init__(
        self,
        services: tuple[HashingService, PasswordService],
        identity: IdentityResolver,
        metrics: RpcMetrics,
    ) -> None:
        """Bind the use cases to one listener."""
        super().__init__(identity, metrics)
        self._svc, self._passwords = services

    @unary("HashPassword")
    async def HashPassword(  # noqa: N802
        self, request: pb.HashPasswordRequest, caller: Caller
    ) -> pb.HashPasswordResponse:
        """An Argon2id PHC string; RESOURCE_EXHAUSTED at once when over the memory budget."""
        hashed = await self._passwords.hash(caller, request.password, request.pepper_key)
        return pb.HashPasswordResponse(hash=hashed.hash)

    @unary("VerifyPassword")
    async def VerifyPassword(  # noqa: N802
        self, request: pb.VerifyPasswordRequest, caller: Caller
    ) -> pb.VerifyPasswordResponse:
        """Return only for a matching password."""
        r = request
        checked = await self._passwords.verify(caller, r.password, r.hash, r.pepper_key)
        return pb.VerifyPasswordResponse(needs_rehash=checked.needs_rehash)

    @unary("Digest")
    async def Digest(self, request: pb.DigestRequest, caller: Caller) -> pb.DigestResponse:  # noqa: N802
        """SHA-256 of one payload."""
        return _digest(self._svc.digest(caller, [request.data])[0])

    @unary("DigestBatch")
    async def DigestBatch(  # noqa: N802
        self, request: pb.DigestBatchRequest, caller: Caller
    ) -> pb.DigestBatchResponse:
        """SHA-256 of many payloads, in order."""
        digests = self._svc.digest(caller, [i.data for i in request.items])
        return pb.DigestBatchResponse(results=[_digest(d) for d in digests])

    @unary("VerifyDigest")
    async def VerifyDigest(  # noqa: N802
        self, request: pb.VerifyDigestRequest, caller: Caller
    ) -> pb.VerifyDigestResponse:
        """Return only when the data's SHA-256 matches (raw or hex)."""
        which = request.WhichOneof("expected")
        self._svc.verify_digest(
            caller,
            request.data,
            digest=request.digest if which == "digest" else None,
            hex_digest=request.hex if which == "hex" else None,
        )
        return pb.VerifyDigestResponse()

    @unary("ComputeHmac")
    async def ComputeHmac(  # noqa: N802
        self, request: pb.ComputeHmacRequest, caller: Caller
    ) -> pb.ComputeHmacResponse:
        """HMAC-SHA256 under a named key (a batch of one)."""
        return _mac(only(await self._svc.hmac(caller, [MacItem(request.key, request.data)])))

    @unary("VerifyHmac")
    async def VerifyHmac(  # noqa: N802
        self, request: pb.VerifyHmacRequest, caller: Caller
    ) -> pb.VerifyHmacResponse:
        """Return only when the MAC matches (constant-time)."""
        r = request
        verified = await self._svc.verify_hmac(caller, MacItem(r.key, r.data, r.mac, r.key_version))
        return pb.VerifyHmacResponse(key_version=verified.key_version)

    @unary("ComputeHmacBatch")
    async def ComputeHmacBatch(  # noqa: N802
        self, request: pb.ComputeHmacBatchRequest, caller: Caller
    ) -> pb.ComputeHmacBatchResponse:
        """Many HMACs; items fail independently."""
        results = await self._svc.hmac(caller, [MacItem(i.key, i.data) for i in request.items])
        return pb.ComputeHmacBatchResponse(
            results=item_results(results, pb.ComputeHmacBatchResult, _mac)
        )

    @unary("BlindIndex")
    async def BlindIndex(  # noqa: N802
        self, request: pb.BlindIndexRequest, caller: Caller
    ) -> pb.BlindIndexResponse:
        """A deterministic index for one field value (a batch of one)."""
        return _index(only(await self._svc.blind_index(caller, [_index_item(request)])))

    @unary("BlindIndexBatch")
    async def BlindIndexBatch(  # noqa: N802
        self, request: pb.BlindIndexBatchRequest, caller: Caller
    ) -> pb.BlindIndexBatchResponse:
        """Many blind indexes (bulk indexing of a table); items fail independently."""
        results = await self._svc.blind_index(caller, [_index_item(i) for i in request.items])
        return pb.BlindIndexBatchResponse(
            results=item_results(results, pb.BlindIndexBatchResult, _index)
        )


def hashing_spec(hashing: HashingService, passwords: PasswordService) -> ServicerSpec:
    """The spec BrokerServer registers: one servicer per listener, all around these use cases."""
    return ServicerSpec(
        service_name(pb, "HashingService"),
        hashing_pb2_grpc.add_HashingServiceServicer_to_server,
        lambda identity, metrics: HashingServicer((hashing, passwords), identity, metrics),
    )
