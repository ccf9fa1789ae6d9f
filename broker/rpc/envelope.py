"""EnvelopeServicer: the gRPC adapter of EnvelopeService (convert → service → convert)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from broker.errors import InvalidRequestError
from broker.rpc.calls import ServicerBase, streaming, unary
from broker.rpc.convert import timestamp
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc
from broker.rpc.items import item_results, only
from broker.rpc.spec import ServicerSpec, service_name
from broker.services.envelope import DecryptItem, EncryptItem, RewrapItem
from broker.services.seed import SeedItem
from broker.services.streams import DecryptStreamSession, EncryptStreamSession

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from broker.policy.authorizer import Caller
    from broker.rpc.calls import IdentityResolver
    from broker.rpc.metrics import RpcMetrics
    from broker.services.envelope import EnvelopeService, Opened, Sealed, SeedOpened

__all__ = ["EnvelopeServicer", "envelope_spec"]

M = TypeVar("M", pb.EncryptStreamRequest, pb.DecryptStreamRequest)


def _enc(r: pb.EncryptRequest) -> EncryptItem:
    return EncryptItem(r.key, r.plaintext, dict(r.context), r.store_context)


def _dec(r: pb.DecryptRequest) -> DecryptItem:
    return DecryptItem(r.ciphertext, dict(r.context))


def _rew(r: pb.RewrapRequest) -> RewrapItem:
    return RewrapItem(r.ciphertext, dict(r.context), r.destination_key)


def _seed(r: pb.OpenSeedEnvelopeRequest) -> SeedItem:
    return SeedItem(r.envelope, r.key, r.reseal_key, dict(r.context))


def _seed_opened(o: SeedOpened) -> pb.OpenSeedEnvelopeResponse:
    s = o.resealed
    if s is None:
        return pb.OpenSeedEnvelopeResponse(plaintext=o.plaintext)
    return pb.OpenSeedEnvelopeResponse(
        ciphertext=s.ciphertext, key=s.key, key_version=s.key_version
    )


def _sealed(s: Sealed) -> pb.EncryptResponse:
    return pb.EncryptResponse(ciphertext=s.ciphertext, key=s.key, key_version=s.key_version)


def _opened(o: Opened) -> pb.DecryptResponse:
    return pb.DecryptResponse(plaintext=o.plaintext, key=o.key, key_version=o.key_version)


def _rewrapped(s: Sealed) -> pb.RewrapResponse:
    return pb.RewrapResponse(ciphertext=s.ciphertext, key=s.key, key_version=s.key_version)


class EnvelopeServicer(ServicerBase, envelope_pb2_grpc.EnvelopeServiceServicer):
    """Serves keybroker.v1.EnvelopeService."""

    def __init__(
        self, service: EnvelopeService, identity: IdentityResolver, metrics: RpcMetrics
    ) -> None:
        """Bind the use case to one listener."""
        super().__init__(identity, metrics)
        self._svc = service

    @unary("Encrypt")
    async def Encrypt(self, request: pb.EncryptRequest, caller: Caller) -> pb.EncryptResponse:  # noqa: N802
        """Seal one plaintext (a batch of one)."""
        return _sealed(only(await self._svc.encrypt(caller, [_enc(request)])))

    @unary("Decrypt")
    async def Decrypt(self, request: pb.DecryptRequest, caller: Caller) -> pb.DecryptResponse:  # noqa: N802
        """Open one envelope (a batch of one)."""
        return _opened(only(await self._svc.decrypt(caller, [_dec(request)])))

    @unary("Rewrap")
    async def Rewrap(self, request: pb.RewrapRequest, caller: Caller) -> pb.RewrapResponse:  # noqa: N802
        """Re-seal one envelope (a batch of one)."""
        return _rewrapped(only(await self._svc.rewrap(caller, [_rew(request)])))

    @unary("GenerateDataKey")
    async def GenerateDataKey(  # noqa: N802
        self, request: pb.GenerateDataKeyRequest, caller: Caller
    ) -> pb.GenerateDataKeyResponse:
        """A fresh key and its envelope."""
        plaintext, s = await self._svc.generate_data_key(caller, request.key, dict(request.context))
        return pb.GenerateDataKeyResponse(
            plaintext=b"" if request.without_plaintext else plaintext,
            ciphertext=s.ciphertext,
            key=s.key,
            key_version=s.key_version,
        )

    @unary("EncryptBatch")
    async def EncryptBatch(  # noqa: N802
        self, request: pb.EncryptBatchRequest, caller: Caller
    ) -> pb.EncryptBatchResponse:
        """Seal many plaintexts; items fail independently."""
        results = await self._svc.encrypt(caller, [_enc(i) for i in request.items])
        return pb.EncryptBatchResponse(
            results=item_results(results, pb.EncryptBatchResult, _sealed)
        )

    @unary("DecryptBatch")
    async def DecryptBatch(  # noqa: N802
        self, request: pb.DecryptBatchRequest, caller: Caller
    ) -> pb.DecryptBatchResponse:
        """Open many envelopes; items fail independently."""
        results = await self._svc.decrypt(caller, [_dec(i) for i in request.items])
        return pb.DecryptBatchResponse(
            results=item_results(results, pb.DecryptBatchResult, _opened)
        )

    @unary("RewrapBatch")
    async def RewrapBatch(  # noqa: N802
        self, request: pb.RewrapBatchRequest, caller: Caller
    ) -> pb.RewrapBatchResponse:
        """Re-seal many envelopes; items fail independently."""
        results = await self._svc.rewrap(caller, [_rew(i) for i in request.items])
        return pb.RewrapBatchResponse(
            results=item_results(results, pb.RewrapBatchResult, _rewrapped)
        )

    @unary("LeaseDataKey")
    async def LeaseDataKey(  # noqa: N802
        self, request: pb.LeaseDataKeyRequest, caller: Caller
    ) -> pb.LeaseDataKeyResponse:
        """A content key and header for local sealing, within limits."""
        g = await self._svc.lease(caller, request.key, dict(request.context))
        return pb.LeaseDataKeyResponse(
            data_key=g.data_key,
            header_prefix=g.header_prefix,
            aad_suffix=g.aad_suffix,
            key=g.key,
            key_version=g.key_version,
            expire_time=timestamp(g.expires_at),
            max_messages=g.max_messages,
            max_bytes=g.max_bytes,
        )

    @unary("OpenSeedEnvelope")
    async def OpenSeedEnvelope(  # noqa: N802
        self, request: pb.OpenSeedEnvelopeRequest, caller: Caller
    ) -> pb.OpenSeedEnvelopeResponse:
        """Open one envelope ecl_crypto_utility sealed, resealed here if asked (a batch of one)."""
        return _seed_opened(only(await self._svc.open_seed(caller, [_seed(request)])))

    @streaming("EncryptStream")
    async def EncryptStream(  # noqa: N802
        self, requests: AsyncIterator[pb.EncryptStreamRequest], caller: Caller
    ) -> AsyncIterator[pb.EncryptStreamResponse]:
        """Seal a stream: start message, then plaintext chunks."""
        start = await _start(requests)
        s = start.start
        enc, _, _ = await self._svc.open_encrypt_stream(
            caller, s.key, dict(s.context), store=s.store_context
        )
        session = EncryptStreamSession(enc)
        yield pb.EncryptStreamResponse(chunk=session.header())
        async for request in _chunks(requests):
            if out := session.feed(request):
                yield pb.EncryptStreamResponse(chunk=out)
        yield pb.EncryptStreamResponse(chunk=session.finish())

    @streaming("DecryptStream")
    async def DecryptStream(  # noqa: N802
        self, requests: AsyncIterator[pb.DecryptStreamRequest], caller: Caller
    ) -> AsyncIterator[pb.DecryptStreamResponse]:
        """Open a stream: start message, then envelope chunks."""
        start = await _start(requests)
        session = DecryptStreamSession(self._svc, caller, dict(start.start.context))
        async for chunk in _chunks(requests):
            if out := await session.feed(chunk):
                yield pb.DecryptStreamResponse(chunk=out)
        yield pb.DecryptStreamResponse(chunk=session.finish())


def envelope_spec(service: EnvelopeService) -> ServicerSpec:
    """The spec BrokerServer registers: one servicer per listener, all around this use case."""
    return ServicerSpec(
        service_name(pb, "EnvelopeService"),
        envelope_pb2_grpc.add_EnvelopeServiceServicer_to_server,
        lambda identity, metrics: EnvelopeServicer(service, identity, metrics),
    )


async def _start(requests: AsyncIterator[M]) -> M:
    """The first request, which must carry `start`."""
    async for request in requests:
        if request.WhichOneof("message") != "start":
            raise InvalidRequestError("the first stream message must be `start`")
        return request
    raise InvalidRequestError("the stream ended before its `start` message")


async def _chunks(
    requests: AsyncIterator[pb.EncryptStreamRequest] | AsyncIterator[pb.DecryptStreamRequest],
) -> AsyncIterator[bytes]:
    """The chunks after `start`; a second `start` is a protocol error."""
    async for request in requests:
        if request.WhichOneof("message") != "chunk":
            raise InvalidRequestError("only the first stream message may be `start`")
        yield request.chunk
