"""EnvelopeService over a real Unix socket against a real daemon process."""

from __future__ import annotations

import os

import grpc
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import key_admin_pb2

FIXED = "ciphertext could not be decrypted"
MiB = 1 << 20


def _reason(exc: grpc.RpcError) -> str:
    return dict(exc.trailing_metadata() or ()).get("keybroker-error-reason", "")


def _encrypt(daemon, plaintext: bytes, **kw) -> bytes:
    return daemon.envelope.Encrypt(
        pb.EncryptRequest(plaintext=plaintext, key=kw.pop("key", "default"), **kw)
    ).ciphertext


def _decrypt_error(daemon, ciphertext: bytes, context=None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        daemon.envelope.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, context=context or {}))
    return info.value


class TestRoundTrip:
    """Encrypt then decrypt returns the plaintext, for every size a caller may send."""

    @pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1024, MiB, 4 * MiB])
    def test_unary_sizes(self, daemon, size):
        """Sizes from empty to the 4 MiB default limit round-trip through unary calls."""
        plaintext = os.urandom(size)
        ct = _encrypt(daemon, plaintext, context={"tenant": "a"})
        out = daemon.envelope.Decrypt(pb.DecryptRequest(ciphertext=ct, context={"tenant": "a"}))
        assert out.plaintext == plaintext
        assert out.key == "default"

    @pytest.mark.parametrize("size", [0, 1, 256 * 1024, 5 * MiB + 3])
    def test_stream_sizes(self, daemon, size):
        """Streams of any size round-trip, chunked differently on each side."""
        plaintext = os.urandom(size)
        start = pb.EncryptStreamRequest(
            start=pb.EncryptStreamStart(key="default", context={"t": "1"})
        )
        chunks = [
            pb.EncryptStreamRequest(chunk=plaintext[i : i + 300_000])
            for i in range(0, size, 300_000)
        ]
        envelope = b"".join(r.chunk for r in daemon.envelope.EncryptStream(iter([start, *chunks])))
        dstart = pb.DecryptStreamRequest(start=pb.DecryptStreamStart(context={"t": "1"}))
        dchunks = [
            pb.DecryptStreamRequest(chunk=envelope[i : i + 777_777])
            for i in range(0, len(envelope), 777_777)
        ]
        out = b"".join(r.chunk for r in daemon.envelope.DecryptStream(iter([dstart, *dchunks])))
        assert out == plaintext

    def test_unary_decrypt_opens_small_stream_envelopes(self, daemon):
        """A streamed envelope that fits in one message also opens with Decrypt."""
        start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
        envelope = b"".join(
            r.chunk
            for r in daemon.envelope.EncryptStream(
                iter([start, pb.EncryptStreamRequest(chunk=b"abc")])
            )
        )
        assert daemon.envelope.Decrypt(pb.DecryptRequest(ciphertext=envelope)).plaintext == b"abc"

    def test_stored_context_needs_no_context(self, daemon):
        """With store_context the caller need not present the context again."""
        ct = _encrypt(daemon, b"x", context={"tenant": "a"}, store_context=True)
        assert daemon.envelope.Decrypt(pb.DecryptRequest(ciphertext=ct)).plaintext == b"x"
        err = _decrypt_error(daemon, ct, {"tenant": "b"})
        assert err.details() == FIXED

    def test_truncated_stream_fails(self, daemon):
        """A stream cut at a segment boundary is refused at the end."""
        plaintext = os.urandom(600_000)
        start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
        envelope = b"".join(
            r.chunk
            for r in daemon.envelope.EncryptStream(
                iter([start, pb.EncryptStreamRequest(chunk=plaintext)])
            )
        )
        cut = envelope[: len(envelope) - (600_000 - 2 * 262_144) - 16]
        dstart = pb.DecryptStreamRequest(start=pb.DecryptStreamStart())
        with pytest.raises(grpc.RpcError) as info:
            b"".join(
                r.chunk
                for r in daemon.envelope.DecryptStream(
                    iter([dstart, pb.DecryptStreamRequest(chunk=cut)])
                )
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == FIXED


class TestTampering:
    """Every change to an envelope is refused with one fixed message."""

    @pytest.fixture
    def envelope(self, daemon) -> bytes:
        """A fresh envelope sealed with context tenant=a."""
        return _encrypt(daemon, b"secret payload", context={"tenant": "a"})

    def _offsets(self, envelope: bytes) -> dict[str, int]:
        name_len = envelope[3]
        wrapped_at = 4 + name_len + 4
        wrapped_len = int.from_bytes(envelope[wrapped_at : wrapped_at + 2], "big")
        commit_at = wrapped_at + 2 + wrapped_len
        return {
            "version": 0,
            "algorithm": 1,
            "flags": 2,
            "key name length": 3,
            "key name": 4,
            "key version": 4 + name_len + 3,
            "wrapped length": wrapped_at + 1,
            "wrapped DEK": wrapped_at + 2 + 5,
            "commitment": commit_at + 3,
            "nonce": commit_at + 32 + 1,
            "body": commit_at + 44 + 2,
            "tag": len(envelope) - 1,
        }

    @pytest.mark.parametrize(
        "field",
        [
            "version",
            "algorithm",
            "flags",
            "key name length",
            "key name",
            "key version",
            "wrapped length",
            "wrapped DEK",
            "commitment",
            "nonce",
            "body",
            "tag",
        ],
    )
    def test_each_header_field(self, daemon, envelope, field):
        """Flipping a bit in any field gives INVALID_ARGUMENT with the fixed message."""
        data = bytearray(envelope)
        data[self._offsets(envelope)[field]] ^= 0x01
        err = _decrypt_error(daemon, bytes(data), {"tenant": "a"})
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == FIXED
        assert _reason(err) == "DECRYPTION_FAILED"

    @pytest.mark.parametrize("cut", [0, 1, 3, 10, 40, -17, -1])
    def test_truncation(self, daemon, envelope, cut):
        """Any truncation is refused with the fixed message."""
        err = _decrypt_error(daemon, envelope[:cut], {"tenant": "a"})
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, FIXED)

    def test_wrong_context(self, daemon, envelope):
        """Another tenant's context, or none, does not open the envelope."""
        for context in ({"tenant": "b"}, {}, {"tenant": "a", "x": "y"}):
            assert _decrypt_error(daemon, envelope, context).details() == FIXED

    def test_garbage(self, daemon):
        """Random bytes and appended bytes are refused the same way."""
        assert _decrypt_error(daemon, os.urandom(200)).details() == FIXED
        good = _encrypt(daemon, b"x")
        assert _decrypt_error(daemon, good + b"\x00").details() == FIXED


class TestBadInput:
    """Invalid requests get precise codes and messages naming the limit."""

    def test_unknown_key(self, daemon):
        """An unconfigured key is NOT_FOUND."""
        with pytest.raises(grpc.RpcError) as info:
            _encrypt(daemon, b"x", key="nope")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

    def test_wrong_purpose(self, daemon):
        """Encrypting with the signing key is FAILED_PRECONDITION."""
        with pytest.raises(grpc.RpcError) as info:
            _encrypt(daemon, b"x", key="signing")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    def test_malformed_key_name(self, daemon):
        """A malformed key name is INVALID_ARGUMENT."""
        with pytest.raises(grpc.RpcError) as info:
            _encrypt(daemon, b"x", key="../etc")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def test_oversized_plaintext(self, daemon):
        """One byte over the limit is refused and the message names the limit."""
        with pytest.raises(grpc.RpcError) as info:
            _encrypt(daemon, bytes(4 * MiB + 1))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "4194304" in info.value.details()

    def test_oversized_context(self, daemon):
        """A context over its bounds is INVALID_ARGUMENT naming the bound."""
        with pytest.raises(grpc.RpcError) as info:
            _encrypt(daemon, b"x", context={f"k{i}": "v" for i in range(65)})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "64" in info.value.details()

    def test_batch_items_fail_independently(self, daemon):
        """In a batch, a bad item gets its own error and the others succeed."""
        good = _encrypt(daemon, b"ok")
        reply = daemon.envelope.DecryptBatch(
            pb.DecryptBatchRequest(
                items=[pb.DecryptRequest(ciphertext=good), pb.DecryptRequest(ciphertext=b"bad")]
            )
        )
        assert reply.results[0].response.plaintext == b"ok"
        assert reply.results[1].error.reason == "DECRYPTION_FAILED"
        assert reply.results[1].error.message == FIXED
        assert reply.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]

    def test_batch_over_limit(self, daemon):
        """More items than server.max_batch_items fail the whole request."""
        items = [pb.EncryptRequest(key="default", plaintext=b"") for _ in range(1001)]
        with pytest.raises(grpc.RpcError) as info:
            daemon.envelope.EncryptBatch(pb.EncryptBatchRequest(items=items))
        assert "1000" in info.value.details()

    def test_stream_without_start(self, daemon):
        """A stream must open with its start message."""
        with pytest.raises(grpc.RpcError) as info:
            list(daemon.envelope.EncryptStream(iter([pb.EncryptStreamRequest(chunk=b"x")])))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestOtherOperations:
    """Data keys, leases and rewrap."""

    def test_generate_data_key(self, daemon):
        """The returned envelope decrypts to the returned key; without_plaintext omits it."""
        reply = daemon.envelope.GenerateDataKey(pb.GenerateDataKeyRequest(key="default"))
        assert len(reply.plaintext) == 32
        assert (
            daemon.envelope.Decrypt(pb.DecryptRequest(ciphertext=reply.ciphertext)).plaintext
            == reply.plaintext
        )
        bare = daemon.envelope.GenerateDataKey(
            pb.GenerateDataKeyRequest(key="default", without_plaintext=True)
        )
        assert bare.plaintext == b""

    def test_lease_envelopes_decrypt(self, daemon):
        """An envelope sealed locally with a lease opens in the broker."""
        lease = daemon.envelope.LeaseDataKey(
            pb.LeaseDataKeyRequest(key="default", context={"t": "x"})
        )
        nonce = os.urandom(12)
        aad = lease.header_prefix + nonce + lease.aad_suffix
        envelope = (
            lease.header_prefix + nonce + AESGCM(lease.data_key).encrypt(nonce, b"local", aad)
        )
        out = daemon.envelope.Decrypt(pb.DecryptRequest(ciphertext=envelope, context={"t": "x"}))
        assert out.plaintext == b"local"
        assert lease.max_messages > 0
        assert lease.expire_time.seconds > 0

    def test_rewrap_after_rotation(self, daemon):
        """After rotation, rewrap moves an envelope to the new version; both still decrypt."""
        old = daemon.envelope.Encrypt(
            pb.EncryptRequest(key="default", plaintext=b"p", context={"a": "b"})
        )
        rotated = daemon.admin.RotateKey(key_admin_pb2.RotateKeyRequest(key="default")).key
        assert rotated.current_version == old.key_version + 1
        new = daemon.envelope.Rewrap(
            pb.RewrapRequest(ciphertext=old.ciphertext, context={"a": "b"})
        )
        assert new.key_version == rotated.current_version
        for ct in (old.ciphertext, new.ciphertext):
            assert (
                daemon.envelope.Decrypt(
                    pb.DecryptRequest(ciphertext=ct, context={"a": "b"})
                ).plaintext
                == b"p"
            )
        fresh = daemon.envelope.Encrypt(pb.EncryptRequest(key="default", plaintext=b"q"))
        assert fresh.key_version == rotated.current_version


class TestOpenSeedEnvelope:
    """OpenSeedEnvelope on a dev daemon, whose keys are all local (the KMS paths: compat tests)."""

    def _error(self, daemon, **fields) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            daemon.envelope.OpenSeedEnvelope(pb.OpenSeedEnvelopeRequest(**fields))
        return info.value

    def test_local_key_is_refused(self, daemon):
        """A local:// key is FAILED_PRECONDITION: the application opens those with its key."""
        err = self._error(daemon, envelope=b"e30=", key="default")
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(err) == "KEY_STATE"
        assert "master key" in err.details()

    def test_oversize_envelope(self, daemon):
        """One byte over server.max_plaintext_bytes + 65536 is refused, naming the limit."""
        limit = 4 * MiB + 65536
        err = self._error(daemon, envelope=bytes(limit + 1), key="default")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(limit) in err.details()

    def test_unknown_key(self, daemon):
        """A key the daemon does not serve is NOT_FOUND (this caller may use every key)."""
        err = self._error(daemon, envelope=b"e30=", key="nope")
        assert err.code() == grpc.StatusCode.NOT_FOUND

    def test_context_needs_reseal_key(self, daemon):
        """A context without reseal_key is INVALID_ARGUMENT."""
        err = self._error(daemon, envelope=b"e30=", key="default", context={"t": "1"})
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reseal_key" in err.details()
