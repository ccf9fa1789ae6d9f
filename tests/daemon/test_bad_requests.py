"""Requests the daemon cannot use: bytes that are no message, and messages over the size limits.

Every such request is answered by the per-call pipeline (INVALID_ARGUMENT, a request id and a
reason, one audit record, one info log line, no traceback), except one far beyond any valid
size, which the transport cuts off before the daemon buffers it (docs/operations.md, "Request
sizes").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import keybroker_client as kb
import pytest

from broker.rpc.gen import (
    asymmetric_pb2,
    envelope_pb2,
    hashing_pb2,
    key_admin_pb2,
    key_derivation_pb2,
    signing_pb2,
    token_pb2,
)
from broker.rpc.gen import envelope_pb2 as pb

if TYPE_CHECKING:
    from support.daemon import Daemon

MiB = 1 << 20
LIMIT = 4 * MiB  # server.max_plaintext_bytes by default
FRAMING = MiB  # what one call may carry beyond LIMIT
GARBAGE = b"\xff\xff\xff\xff"  # a field tag whose varint never ends: no message parses it
UNDECODABLE = "request could not be decoded"
SERVICES = (
    asymmetric_pb2,
    envelope_pb2,
    hashing_pb2,
    key_admin_pb2,
    key_derivation_pb2,
    signing_pb2,
    token_pb2,
)


def _methods(*, streaming: bool) -> list[str]:
    """The full path of every RPC of the API, unary or client-streaming."""
    return [
        f"/{service.full_name}/{method.name}"
        for module in SERVICES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.client_streaming == streaming
    ]


UNARY = _methods(streaming=False)
STREAMS = _methods(streaming=True)


@pytest.fixture(scope="module")
def raw(daemon: Daemon):
    """A channel that sends bytes as they are (no serializer) and up to 64 MiB per message."""
    options = [
        ("grpc.max_send_message_length", 64 * MiB),
        ("grpc.max_receive_message_length", 64 * MiB),
    ]
    with grpc.insecure_channel(f"unix:{daemon.socket}", options=options) as channel:
        yield channel


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log or audit file (grpc's own plain-text lines are skipped)."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _trailers(exc: grpc.RpcError) -> dict[str, str]:
    return dict(exc.trailing_metadata() or ())


def _refused(call, request, timeout: float = 30) -> grpc.RpcError:
    """The error a unary call fails with."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=timeout)
    return info.value


def _stream_refused(call, messages, timeout: float = 30) -> grpc.RpcError:
    """The error a stream fails with, once drained."""
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter(messages), timeout=timeout))
    return info.value


def _assert_invalid(daemon: Daemon, exc: grpc.RpcError, method: str) -> list[dict[str, Any]]:
    """INVALID_ARGUMENT with reason and request id, its `rpc` record and one info log line.

    Returns the call's audit records.
    """
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    trailers = _trailers(exc)
    assert trailers.get("keybroker-error-reason") == "INVALID_ARGUMENT"
    request_id = trailers.get("keybroker-request-id", "")
    assert len(request_id) == 16
    records = [
        r for r in _json_lines(daemon.state_dir / "audit.log") if r.get("request_id") == request_id
    ]
    rpc = [r for r in records if r["event"] == "rpc"]
    assert [(r["method"], r["code"]) for r in rpc] == [(method, "INVALID_ARGUMENT")]
    logged = [r for r in _json_lines(daemon.log_path) if r.get("request_id") == request_id]
    assert [(r["event"], r["level"]) for r in logged] == [("rpc_failed", "info")]
    assert "exception" not in logged[0]
    return records


def _no_traceback(daemon: Daemon) -> None:
    log = daemon.log()
    assert "Traceback" not in log
    assert "rpc_internal_error" not in log


class TestUndecodable:
    """Bytes that are not a protobuf message of the method's request type."""

    def test_every_method_is_covered(self):
        """The API's 34 unary RPCs and 2 streams are all tried below."""
        assert (len(UNARY), len(STREAMS)) == (34, 2)

    @pytest.mark.parametrize("path", UNARY, ids=lambda p: p.rsplit("/", 1)[1])
    def test_unary(self, daemon, raw, path):
        """INVALID_ARGUMENT "request could not be decoded", one audit record, one log line."""
        err = _refused(raw.unary_unary(path), GARBAGE)

        assert err.details() == UNDECODABLE
        records = _assert_invalid(daemon, err, path.rsplit("/", 1)[1])
        assert len(records) == 1
        assert records[0]["caller"]  # the caller was resolved as for any call
        _no_traceback(daemon)

    @pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.rsplit("/", 1)[1])
    def test_stream_first_message(self, daemon, raw, path):
        """A stream whose first message does not decode fails like a unary call."""
        err = _stream_refused(raw.stream_stream(path), [GARBAGE])

        assert err.details() == UNDECODABLE
        records = _assert_invalid(daemon, err, path.rsplit("/", 1)[1])
        assert len(records) == 1
        _no_traceback(daemon)

    def test_stream_later_message(self, daemon, raw):
        """An undecodable chunk after a valid start ends the stream the same way."""
        start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
        messages = [start.SerializeToString(), GARBAGE]
        path = "/keybroker.v1.EnvelopeService/EncryptStream"

        err = _stream_refused(raw.stream_stream(path), messages)

        assert err.details() == UNDECODABLE
        _assert_invalid(daemon, err, "EncryptStream")
        _no_traceback(daemon)

    def test_daemon_still_serves(self, daemon):
        """After all of that, a good request succeeds."""
        reply = daemon.envelope.Encrypt(pb.EncryptRequest(key="default", plaintext=b"ok"))
        assert reply.ciphertext


def _encrypt_error(daemon: Daemon, size: int) -> grpc.RpcError:
    request = pb.EncryptRequest(key="default", plaintext=bytes(size))
    return _refused(daemon.envelope.Encrypt, request)


class TestOversize:
    """Requests over server.max_plaintext_bytes, in each size band."""

    @pytest.mark.parametrize(
        "size",
        [LIMIT + 1, LIMIT + FRAMING + 1, 2 * LIMIT],
        ids=["over-plaintext-limit", "over-one-call", "twice-the-limit"],
    )
    def test_encrypt(self, daemon, size):
        """INVALID_ARGUMENT naming the setting and EncryptStream, never RESOURCE_EXHAUSTED."""
        err = _encrypt_error(daemon, size)

        _assert_invalid(daemon, err, "Encrypt")
        assert "server.max_plaintext_bytes" in err.details()
        assert "EncryptStream" in err.details()
        _no_traceback(daemon)

    def test_batch_over_one_call(self, daemon):
        """Items each under the limit, together over what one call may carry."""
        item = pb.EncryptRequest(key="default", plaintext=bytes(LIMIT // 2 + 600_000))
        request = pb.EncryptBatchRequest(items=[item, item])

        err = _refused(daemon.envelope.EncryptBatch, request)

        _assert_invalid(daemon, err, "EncryptBatch")
        assert "server.max_plaintext_bytes" in err.details()

    def test_stream_chunk_over_one_message(self, daemon):
        """A stream message larger than one call may carry: INVALID_ARGUMENT, smaller chunks."""
        start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
        big = pb.EncryptStreamRequest(chunk=bytes(LIMIT + FRAMING + 1))

        err = _stream_refused(daemon.envelope.EncryptStream, [start, big])

        _assert_invalid(daemon, err, "EncryptStream")
        assert "server.max_plaintext_bytes" in err.details()
        assert "smaller chunks" in err.details()


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


class TestFarBeyond:
    """A request far over any valid size is cut off by the transport, unbuffered."""

    SIZE = 48 * MiB
    BOUND = 16 * MiB  # well under SIZE: the daemon never holds the message

    def test_transport_refuses_without_buffering(self, make_daemon):
        """RESOURCE_EXHAUSTED from gRPC itself, and the daemon's peak RSS barely moves."""
        daemon = make_daemon().start()
        daemon.envelope.Encrypt(pb.EncryptRequest(key="default", plaintext=b"warm"))
        before = _peak_rss(daemon.pid)

        err = _encrypt_error(daemon, self.SIZE)

        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in err.details()
        assert _peak_rss(daemon.pid) - before < self.BOUND
        reply = daemon.envelope.Encrypt(pb.EncryptRequest(key="default", plaintext=b"ok"))
        assert reply.ciphertext


class TestPythonClient:
    """keybroker_client says what to do instead, in every size band."""

    @pytest.mark.parametrize(
        "size",
        [LIMIT + 1, LIMIT + FRAMING + 1, 48 * MiB, 65 * MiB],
        ids=["daemon-limit", "daemon-one-call", "daemon-transport", "client-channel"],
    )
    def test_encrypt_too_large(self, daemon, size):
        """InvalidParameterError naming encrypt_stream, not a retryable ResourceExhaustedError."""
        with (
            kb.Client(daemon.socket, timeout=30) as client,
            pytest.raises(kb.InvalidParameterError) as info,
        ):
            client.encrypt(bytes(size))
        assert not isinstance(info.value, kb.ResourceExhaustedError)
        assert "encrypt_stream" in info.value.message
        assert "server.max_plaintext_bytes" in info.value.message
