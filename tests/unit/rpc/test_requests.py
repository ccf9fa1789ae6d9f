"""Requests gRPC cannot hand over: request_reader, ServicerSpec.register and the wrappers.

The daemon tests (tests/daemon/test_bad_requests.py) prove the whole over a socket; these
check each piece without a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from structlog.testing import capture_logs

from broker.policy.authorizer import Caller
from broker.rpc.audit_calls import CallAuditor
from broker.rpc.calls import (
    UNDECODABLE,
    RefusedRequest,
    ServicerBase,
    request_reader,
    streaming,
    unary,
)
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc, token_pb2_grpc
from broker.rpc.metrics import RpcMetrics
from broker.rpc.spec import ServicerSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

GARBAGE = b"\xff\xff\xff\xff"
APP = Caller("listener", "app")


class TestRequestReader:
    """The decoder every method is registered with: it never raises."""

    def test_decodes_a_valid_request(self):
        """Valid bytes become the message."""
        data = pb.EncryptRequest(key="default", plaintext=b"x").SerializeToString()
        read = request_reader(pb.EncryptRequest.FromString, 1024, stream=False)
        assert read(data) == pb.EncryptRequest(key="default", plaintext=b"x")

    def test_undecodable_bytes(self):
        """Bytes no message parses become a refusal with the fixed message."""
        read = request_reader(pb.EncryptRequest.FromString, 1024, stream=False)
        assert read(GARBAGE) == RefusedRequest(UNDECODABLE)

    def test_invalid_utf8_in_a_string_field(self):
        """A `string` field that is not UTF-8 is undecodable too."""
        read = request_reader(pb.EncryptRequest.FromString, 1024, stream=False)
        assert read(b"\x0a\x02\xff\xfe") == RefusedRequest(UNDECODABLE)

    def test_exactly_the_limit_is_decoded(self):
        """The limit itself is allowed."""
        data = pb.EncryptRequest(plaintext=bytes(100)).SerializeToString()
        read = request_reader(pb.EncryptRequest.FromString, len(data), stream=False)
        assert read(data) == pb.EncryptRequest(plaintext=bytes(100))

    def test_over_the_limit_names_setting_and_stream(self):
        """One byte over: refused without decoding, naming the setting and EncryptStream."""
        data = pb.EncryptRequest(plaintext=bytes(100)).SerializeToString()
        read = request_reader(pb.EncryptRequest.FromString, len(data) - 1, stream=False)
        assert read(data) == RefusedRequest(
            f"request is {len(data)} bytes, over the {len(data) - 1} bytes one call may carry "
            "(server.max_plaintext_bytes plus framing); send less per call, or use EncryptStream "
            "for large payloads"
        )

    def test_stream_message_over_the_limit(self):
        """A stream message over the limit asks for smaller chunks."""
        read = request_reader(pb.EncryptStreamRequest.FromString, 10, stream=True)
        assert read(bytes(11)) == RefusedRequest(
            "stream message is 11 bytes, over the 10 bytes one message may carry "
            "(server.max_plaintext_bytes plus framing); send smaller chunks"
        )


class RecordingServer:
    """What a grpc.aio server is asked to register."""

    def __init__(self) -> None:
        """Nothing registered yet."""
        self.generic: list[Any] = []
        self.by_name: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Keep the generic handlers."""
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Keep the handlers by method name."""
        self.by_name[service] = handlers


class TestRegister:
    """ServicerSpec.register swaps every method's decoder and keeps everything else."""

    def _register(self, max_request_bytes: int = 1024) -> RecordingServer:
        server = RecordingServer()
        spec = ServicerSpec(
            "keybroker.v1.EnvelopeService",
            envelope_pb2_grpc.add_EnvelopeServiceServicer_to_server,
            lambda _identity, _metrics: None,
        )
        servicer = envelope_pb2_grpc.EnvelopeServiceServicer()
        spec.register(servicer, server, max_request_bytes=max_request_bytes)
        return server

    def test_every_method_refuses_garbage(self):
        """All 11 methods decode through a reader that returns a refusal, not an exception."""
        handlers = self._register().by_name["keybroker.v1.EnvelopeService"]
        assert len(handlers) == 11
        for name, handler in handlers.items():
            assert handler.request_deserializer(GARBAGE) == RefusedRequest(UNDECODABLE), name

    def test_kind_behaviour_and_serializer_are_kept(self):
        """A stream stays a stream; the servicer's method and the serializer are the same."""
        handlers = self._register().by_name["keybroker.v1.EnvelopeService"]
        stream, encrypt = handlers["EncryptStream"], handlers["Encrypt"]
        assert (stream.request_streaming, stream.response_streaming) == (True, True)
        assert (encrypt.request_streaming, encrypt.response_streaming) == (False, False)
        assert encrypt.response_serializer == pb.EncryptResponse.SerializeToString
        assert encrypt.unary_unary.__name__ == "Encrypt"

    def test_generic_handler_serves_the_guarded_handlers(self):
        """The generic handler gRPC falls back to has the same guarded decoders."""
        server = self._register(max_request_bytes=3)
        (generic,) = server.generic

        class Details:
            method = "/keybroker.v1.EnvelopeService/Decrypt"

        handler = generic.service(Details())
        refused = handler.request_deserializer(bytes(4))
        assert isinstance(refused, RefusedRequest)
        assert "over the 3 bytes" in refused.message

    def test_generated_code_without_named_handlers_is_refused(self):
        """A generator that registers only generic handlers fails at start, not silently."""

        def add_generic_only(servicer: object, server: Any) -> None:
            del servicer
            server.add_generic_rpc_handlers(())

        spec = ServicerSpec("keybroker.v1.Nothing", add_generic_only, lambda _i, _m: None)
        with pytest.raises(TypeError, match="registered no method handlers"):
            spec.register(object(), RecordingServer(), max_request_bytes=1)

    def test_other_generated_services_register_too(self):
        """Any generated module works the same way (TokenService here)."""
        server = RecordingServer()
        spec = ServicerSpec(
            "keybroker.v1.TokenService",
            token_pb2_grpc.add_TokenServiceServicer_to_server,
            lambda _i, _m: None,
        )
        spec.register(token_pb2_grpc.TokenServiceServicer(), server, max_request_bytes=64)
        handler = server.by_name["keybroker.v1.TokenService"]["GenerateToken"]
        assert handler.request_deserializer(GARBAGE) == RefusedRequest(UNDECODABLE)


class AbortedError(Exception):
    """What the fake context's abort raises, as grpc's does."""


class FakeContext:
    """The parts of a grpc.aio ServicerContext the wrappers use."""

    def __init__(self) -> None:
        """No status yet."""
        self.trailers: tuple[tuple[str, str], ...] = ()
        self.status: tuple[grpc.StatusCode, str] | None = None

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str], ...]) -> None:
        """Keep the trailing metadata."""
        self.trailers = trailers

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        """Keep the status and end the call."""
        self.status = (code, details)
        raise AbortedError


class RecordingLog:
    """Keeps the audit records a call writes."""

    def __init__(self) -> None:
        """No records yet."""
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        """Keep one record."""
        self.records.append(record)


class EchoServicer(ServicerBase):
    """A servicer whose handlers note every request they see."""

    def __init__(self) -> None:
        """Every caller is APP."""
        super().__init__(lambda _context: APP, RpcMetrics())
        self.seen: list[object] = []

    @unary("Echo")
    async def Echo(self, request: pb.EncryptRequest, caller: Caller) -> pb.EncryptResponse:  # noqa: N802
        """Answer with the key."""
        del caller
        self.seen.append(request)
        return pb.EncryptResponse(key=request.key)

    @streaming("EchoStream")
    async def EchoStream(  # noqa: N802
        self, requests: AsyncIterator[pb.EncryptStreamRequest], caller: Caller
    ) -> AsyncIterator[pb.EncryptStreamResponse]:
        """One chunk per request."""
        del caller
        async for request in requests:
            self.seen.append(request)
            yield pb.EncryptStreamResponse(chunk=request.chunk)


@pytest.fixture
def echo() -> tuple[EchoServicer, RecordingLog]:
    """An EchoServicer observed by a CallAuditor writing to a RecordingLog."""
    servicer, audit = EchoServicer(), RecordingLog()
    servicer.observer = CallAuditor(audit)
    return servicer, audit


def _assert_refused(context: FakeContext, audit: RecordingLog, logs: list[Any], method: str):
    assert context.status == (grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE)
    trailers = dict(context.trailers)
    assert trailers["keybroker-error-reason"] == "INVALID_ARGUMENT"
    request_id = trailers["keybroker-request-id"]
    assert [(r["event"], r["method"], r["code"], r["caller"]) for r in audit.records] == [
        ("rpc", method, "INVALID_ARGUMENT", "app")
    ]
    assert audit.records[0]["request_id"] == request_id
    assert [(e["event"], e["log_level"], e["request_id"]) for e in logs] == [
        ("rpc_failed", "info", request_id)
    ]


async def _drain(replies: AsyncIterator[pb.EncryptStreamResponse], out: list[bytes]) -> None:
    """Collect the chunks of a stream until it ends or fails."""
    async for reply in replies:
        out.append(reply.chunk)  # noqa: PERF401 - keeps the chunks that came before a failure


class TestWrappers:
    """@unary and @streaming refuse a RefusedRequest like any invalid request."""

    async def test_unary(self, echo):
        """The handler never runs; INVALID_ARGUMENT, one audit record, one info line, counted."""
        servicer, audit = echo
        context = FakeContext()
        with capture_logs() as logs, pytest.raises(AbortedError):
            await servicer.Echo(RefusedRequest(UNDECODABLE), context)
        assert servicer.seen == []
        _assert_refused(context, audit, logs, "Echo")
        assert servicer.metrics.calls == {("Echo", "INVALID_ARGUMENT"): 1}

    async def test_unary_valid_request_unchanged(self, echo):
        """A decoded request reaches the handler as before."""
        servicer, _ = echo
        reply = await servicer.Echo(pb.EncryptRequest(key="k"), FakeContext())
        assert reply.key == "k"

    async def test_stream_fails_at_the_refused_message(self, echo):
        """Messages before it are served; the stream then ends INVALID_ARGUMENT."""
        servicer, audit = echo
        context = FakeContext()

        async def requests() -> AsyncIterator[object]:
            yield pb.EncryptStreamRequest(chunk=b"a")
            yield RefusedRequest(UNDECODABLE)
            yield pb.EncryptStreamRequest(chunk=b"never")

        out: list[bytes] = []
        with capture_logs() as logs, pytest.raises(AbortedError):
            await _drain(servicer.EchoStream(requests(), context), out)
        assert out == [b"a"]
        assert servicer.seen == [pb.EncryptStreamRequest(chunk=b"a")]
        _assert_refused(context, audit, logs, "EchoStream")
