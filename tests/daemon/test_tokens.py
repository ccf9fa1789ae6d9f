"""TokenService over a real socket."""

from __future__ import annotations

import re

import grpc
import pytest
from support.rpc import assert_fails

from broker.rpc.gen import token_pb2 as pb
from broker.rpc.gen import token_pb2_grpc


@pytest.fixture(scope="module")
def stub(daemon):
    """TokenService stub on the module's dev daemon."""
    return token_pb2_grpc.TokenServiceStub(daemon.channel)


class TestGenerateToken:
    """GenerateToken: CSPRNG bytes in three encodings, 16..1024 bytes."""

    def test_default_is_32_bytes_urlsafe(self, stub):
        """No arguments: 32 bytes as unpadded base64url text."""
        reply = stub.GenerateToken(pb.GenerateTokenRequest())
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", reply.text)
        assert reply.token == b""

    @pytest.mark.parametrize(
        ("encoding", "pattern"),
        [
            (pb.TOKEN_ENCODING_HEX, r"[0-9a-f]{32}"),
            (pb.TOKEN_ENCODING_URLSAFE, r"[A-Za-z0-9_-]{22}"),
        ],
    )
    def test_text_encodings(self, stub, encoding, pattern):
        """Hex is lowercase; urlsafe has no padding."""
        reply = stub.GenerateToken(pb.GenerateTokenRequest(length=16, encoding=encoding))
        assert re.fullmatch(pattern, reply.text)

    def test_bytes(self, stub):
        """BYTES returns the raw token."""
        reply = stub.GenerateToken(
            pb.GenerateTokenRequest(length=1024, encoding=pb.TOKEN_ENCODING_BYTES)
        )
        assert len(reply.token) == 1024
        assert reply.text == ""

    def test_tokens_differ(self, stub):
        """A hundred tokens are all different."""
        tokens = {stub.GenerateToken(pb.GenerateTokenRequest()).text for _ in range(100)}
        assert len(tokens) == 100

    @pytest.mark.parametrize("length", [1, 15, 1025, 1 << 20])
    def test_length_bounds(self, stub, length):
        """Under 16 or over 1024 bytes is INVALID_ARGUMENT naming the bounds."""
        request = pb.GenerateTokenRequest(length=length)
        exc = assert_fails(stub.GenerateToken, request, grpc.StatusCode.INVALID_ARGUMENT)
        assert "16..1024" in exc.details()

    def test_unknown_encoding(self, stub):
        """An encoding number this version does not know is INVALID_ARGUMENT."""
        request = pb.GenerateTokenRequest(encoding=9)
        assert_fails(
            stub.GenerateToken, request, grpc.StatusCode.INVALID_ARGUMENT, message="encoding"
        )
