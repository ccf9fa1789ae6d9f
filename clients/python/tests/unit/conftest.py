"""An in-process gRPC server speaking the keybroker.v1 API, for the client's unit tests.

The fake servicers are not a broker: they record what the client sends (framing, fields,
deadlines) and answer with fixed shapes and errors, so the client's own behaviour is
tested without the daemon.
"""

import json
import time
from concurrent import futures

import grpc
import pytest

from keybroker_client._errors import REASON_METADATA_KEY
from keybroker_client._gen import common_pb2, envelope_pb2, envelope_pb2_grpc
from keybroker_client._gen import key_admin_pb2 as admin_pb
from keybroker_client._gen import key_admin_pb2_grpc as admin_grpc


def _seal(key, context, plaintext):
    """A readable stand-in for an envelope: key, sorted context and hex plaintext."""
    return b"E:" + json.dumps([key, sorted(context.items()), plaintext.hex()]).encode()


def _open(ciphertext, context):
    """Return (key, plaintext) or None when the envelope or its context do not match."""
    if not ciphertext.startswith(b"E:"):
        return None
    key, pairs, hexed = json.loads(ciphertext[2:])
    if [list(p) for p in sorted(context.items())] != pairs:
        return None
    return key, bytes.fromhex(hexed)


def _abort(context, code, reason, message):
    """Fail the call as the broker does: status, details and the reason word."""
    context.set_trailing_metadata(((REASON_METADATA_KEY, reason),))
    context.abort(code, message)


class FakeEnvelope(envelope_pb2_grpc.EnvelopeServiceServicer):
    """Records what the client sends and answers with recognisable shapes."""

    def __init__(self):
        """Start with nothing recorded."""
        self.stream_requests = []
        self.deadlines = []
        self.seed_requests = []

    def Encrypt(self, request, context):  # noqa: N802 - generated servicer name
        """Seal as JSON; `missing` is an unknown key and `slow` outlives short deadlines."""
        self.deadlines.append(context.time_remaining())
        if request.key == "missing":
            _abort(context, grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND", "key not found")
        if request.key == "slow":
            time.sleep(1.0)
        sealed = _seal(request.key, dict(request.context), request.plaintext)
        return envelope_pb2.EncryptResponse(ciphertext=sealed, key=request.key, key_version=1)

    def Decrypt(self, request, context):  # noqa: N802 - generated servicer name
        """Open what Encrypt sealed, failing like the broker when the context differs."""
        opened = _open(request.ciphertext, dict(request.context))
        if opened is None:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "DECRYPTION_FAILED",
                "ciphertext could not be decrypted",
            )
        return envelope_pb2.DecryptResponse(plaintext=opened[1], key=opened[0], key_version=1)

    def EncryptBatch(self, request, _context):  # noqa: N802 - generated servicer name
        """Seal every item."""
        results = []
        for item in request.items:
            sealed = _seal(item.key, dict(item.context), item.plaintext)
            results.append(
                envelope_pb2.EncryptBatchResult(
                    response=envelope_pb2.EncryptResponse(ciphertext=sealed)
                )
            )
        return envelope_pb2.EncryptBatchResponse(results=results)

    def DecryptBatch(self, request, _context):  # noqa: N802 - generated servicer name
        """Open every item, reporting failures as ItemError in place."""
        results = []
        for item in request.items:
            opened = _open(item.ciphertext, dict(item.context))
            if opened is None:
                error = common_pb2.ItemError(
                    code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                    reason="DECRYPTION_FAILED",
                    message="ciphertext could not be decrypted",
                )
                results.append(envelope_pb2.DecryptBatchResult(error=error))
            else:
                response = envelope_pb2.DecryptResponse(plaintext=opened[1])
                results.append(envelope_pb2.DecryptBatchResult(response=response))
        return envelope_pb2.DecryptBatchResponse(results=results)

    def EncryptStream(self, request_iterator, _context):  # noqa: N802 - generated name
        """Echo each chunk in angle brackets, recording the requests."""
        requests = []
        self.stream_requests.append(requests)
        for request in request_iterator:
            requests.append(request)
            if request.WhichOneof("message") == "chunk":
                yield envelope_pb2.EncryptStreamResponse(chunk=b"<" + request.chunk + b">")

    def DecryptStream(self, request_iterator, context):  # noqa: N802 - generated name
        """Echo each chunk upper-cased; a `bad` chunk fails the stream."""
        requests = []
        self.stream_requests.append(requests)
        for request in request_iterator:
            requests.append(request)
            if request.chunk == b"bad":
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "DECRYPTION_FAILED",
                    "ciphertext could not be decrypted",
                )
            if request.WhichOneof("message") == "chunk":
                yield envelope_pb2.DecryptStreamResponse(chunk=request.chunk.upper())

    def OpenSeedEnvelope(self, request, context):  # noqa: N802 - generated servicer name
        """Record the request; `plain:ENVELOPE` back, or sealed under reseal_key; `bad` fails."""
        self.seed_requests.append(request)
        if request.envelope == b"bad":
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "DECRYPTION_FAILED",
                "ciphertext could not be decrypted",
            )
        plaintext = b"plain:" + request.envelope
        if not request.reseal_key:
            return envelope_pb2.OpenSeedEnvelopeResponse(plaintext=plaintext)
        sealed = _seal(request.reseal_key, dict(request.context), plaintext)
        return envelope_pb2.OpenSeedEnvelopeResponse(
            ciphertext=sealed, key=request.reseal_key, key_version=3
        )

    def LeaseDataKey(self, request, _context):  # noqa: N802 - generated servicer name
        """Hand out a fixed lease valid for five minutes."""
        response = envelope_pb2.LeaseDataKeyResponse(
            data_key=bytes(32),
            header_prefix=b"\x01\x01\x00",
            aad_suffix=b"\x00\x00",
            key=request.key,
            key_version=7,
            max_messages=5,
            max_bytes=100,
        )
        response.expire_time.GetCurrentTime()
        response.expire_time.seconds += 300
        return response


class FakeAdmin(admin_grpc.KeyAdminServiceServicer):
    """Describes every key as a two-version local envelope key."""

    def DescribeKey(self, request, _context):  # noqa: N802 - generated servicer name
        """Answer with version 1 disabled (no create time) and version 2 current."""
        key = admin_pb.Key(
            name=request.key,
            uri=f"local://{request.key}",
            backend="local",
            purpose=admin_pb.KEY_PURPOSE_ENVELOPE,
            algorithm="AES-256-GCM",
            current_version=2,
            versions=[
                admin_pb.KeyVersion(version=1, state=admin_pb.KEY_VERSION_STATE_DISABLED),
                admin_pb.KeyVersion(version=2, state=admin_pb.KEY_VERSION_STATE_ENABLED),
            ],
            rotatable=True,
        )
        key.versions[1].create_time.FromSeconds(1_700_000_000)
        return admin_pb.DescribeKeyResponse(key=key)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A real gRPC server with the fake servicers on a Unix socket: (socket, envelope)."""
    socket = tmp_path_factory.mktemp("fake") / "kb.sock"
    envelope = FakeEnvelope()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    envelope_pb2_grpc.add_EnvelopeServiceServicer_to_server(envelope, server)
    admin_grpc.add_KeyAdminServiceServicer_to_server(FakeAdmin(), server)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    yield socket, envelope
    server.stop(grace=None).wait()
