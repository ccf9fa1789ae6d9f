"""KeyDerivationService (HKDF from broker secrets, PBKDF2) over a real socket."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from support.rpc import assert_fails

from broker.rpc.gen import key_derivation_pb2 as pb
from broker.rpc.gen import key_derivation_pb2_grpc

INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def stub(keys_daemon):
    """KeyDerivationService stub on the shared keys daemon."""
    return key_derivation_pb2_grpc.KeyDerivationServiceStub(keys_daemon.channel)


def _hkdf(stub, **fields):
    return stub.DeriveKeyHkdf(pb.DeriveKeyHkdfRequest(key=fields.pop("key", "derive"), **fields))


class TestHkdf:
    """DeriveKeyHkdf from the `derive` secret."""

    def test_deterministic(self, stub):
        """Same inputs, same 32-byte key, with the secret's version."""
        first = _hkdf(stub, info=b"db", context={"tenant": "acme"})
        again = _hkdf(stub, info=b"db", context={"tenant": "acme"})
        assert len(first.derived_key) == 32
        assert first.derived_key == again.derived_key
        assert (first.key, first.key_version) == ("derive", 1)

    @pytest.mark.parametrize(
        "change",
        [{"info": b"cache"}, {"context": {"tenant": "globex"}}, {"salt": b"s"}, {"context": {}}],
    )
    def test_inputs_separate_keys(self, stub, change):
        """Another info, context or salt gives another key."""
        base = {"info": b"db", "context": {"tenant": "acme"}}
        assert _hkdf(stub, **{**base, **change}).derived_key != _hkdf(stub, **base).derived_key

    @pytest.mark.parametrize("length", [16, 64])
    def test_lengths(self, stub, length):
        """Any length from 16 to 64 bytes."""
        assert len(_hkdf(stub, length=length).derived_key) == length

    @pytest.mark.parametrize("length", [15, 65])
    def test_length_bounds(self, stub, length):
        """Lengths outside 16..64 are INVALID_ARGUMENT naming the bounds."""
        request = pb.DeriveKeyHkdfRequest(key="derive", length=length)
        assert_fails(stub.DeriveKeyHkdf, request, INVALID, "INVALID_ARGUMENT", "16..64")

    def test_oversize_inputs(self, stub):
        """Info and salt over 1024 bytes are INVALID_ARGUMENT naming the bound."""
        for request in (
            pb.DeriveKeyHkdfRequest(key="derive", info=b"i" * 1025),
            pb.DeriveKeyHkdfRequest(key="derive", salt=b"s" * 1025),
        ):
            assert_fails(stub.DeriveKeyHkdf, request, INVALID, "INVALID_ARGUMENT", "1024 bytes")

    @pytest.mark.parametrize("key", ["default", "hmac", "signing", "rsa"])
    def test_wrong_key_type(self, stub, key):
        """Only derivation secrets derive."""
        request = pb.DeriveKeyHkdfRequest(key=key)
        assert_fails(stub.DeriveKeyHkdf, request, PRECONDITION, "WRONG_KEY_PURPOSE")

    def test_unknown_key(self, stub):
        """An unknown key is NOT_FOUND."""
        request = pb.DeriveKeyHkdfRequest(key="nope")
        assert_fails(stub.DeriveKeyHkdf, request, grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND")


class TestPbkdf2:
    """DeriveKeyPbkdf2: PBKDF2-HMAC-SHA256 in the broker's work pool."""

    def test_matches_hashlib(self, stub):
        """With a salt given, the key equals hashlib's at the default 600,000 iterations."""
        reply = stub.DeriveKeyPbkdf2(pb.DeriveKeyPbkdf2Request(password=b"hunter2", salt=b"s" * 16))
        assert reply.iterations == 600_000
        assert reply.salt == b"s" * 16
        assert reply.derived_key == hashlib.pbkdf2_hmac("sha256", b"hunter2", b"s" * 16, 600_000)

    def test_fresh_salt(self, stub):
        """Without a salt the broker draws 32 random bytes and returns them."""
        request = pb.DeriveKeyPbkdf2Request(password=b"pw", iterations=10_000, length=64)
        one, two = stub.DeriveKeyPbkdf2(request), stub.DeriveKeyPbkdf2(request)
        assert len(one.salt) == 32
        assert one.salt != two.salt
        assert len(one.derived_key) == 64
        assert one.derived_key == hashlib.pbkdf2_hmac("sha256", b"pw", one.salt, 10_000, 64)

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"iterations": 9_999}, "iterations must be 10,000..10,000,000"),
            ({"iterations": 10_000_001}, "iterations must be 10,000..10,000,000"),
            ({"salt": b"s" * 15}, "salt must be 16..1024 bytes"),
            ({"length": 65}, "length must be 16..64 bytes"),
            ({"password": b"p" * 1025}, "password is longer than 1024 bytes"),
            ({"password": b""}, "password must not be empty"),
        ],
    )
    def test_bounds(self, stub, fields, message):
        """Every parameter out of bounds is INVALID_ARGUMENT naming the bound."""
        request = pb.DeriveKeyPbkdf2Request(**{"password": b"pw", **fields})
        assert_fails(stub.DeriveKeyPbkdf2, request, INVALID, "INVALID_ARGUMENT", message)
