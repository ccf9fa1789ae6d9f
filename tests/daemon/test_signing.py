"""SigningService over a real Unix socket against a daemon holding every signing key type."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from support.rpc import assert_fails, reason

from broker.rpc.gen import key_admin_pb2 as admin_pb
from broker.rpc.gen import signing_pb2 as pb
from broker.rpc.gen import signing_pb2_grpc

INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
# key name -> (SignatureAlgorithm, message hash for a third party)
KEYS = {
    "signing": (pb.SIGNATURE_ALGORITHM_ECDSA_P384_SHA384, "sha384"),
    "p256": (pb.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256, "sha256"),
    "ed": (pb.SIGNATURE_ALGORITHM_ED25519, None),
    "pss3072": (pb.SIGNATURE_ALGORITHM_RSA_PSS_3072_SHA256, "sha256"),
    "pss4096": (pb.SIGNATURE_ALGORITHM_RSA_PSS_4096_SHA256, "sha256"),
}
HASHED = [k for k, (_, h) in KEYS.items() if h]
OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def stub(keys_daemon):
    """SigningService stub on the shared keys daemon."""
    return signing_pb2_grpc.SigningServiceStub(keys_daemon.channel)


def _sign(stub, key, data=b"invoice 42"):
    return stub.Sign(pb.SignRequest(key=key, data=data))


def _pem(stub, key, version=0):
    return stub.GetPublicKey(pb.GetPublicKeyRequest(key=key, key_version=version)).pem


def _third_party_verify(pem, hash_name, signature, data):
    """Verify with pyca alone from the PEM: what anyone outside the broker can do."""
    public = serialization.load_pem_public_key(pem.encode())
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, data)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(
            signature, data, ec.ECDSA(hashes.SHA384() if hash_name == "sha384" else hashes.SHA256())
        )
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public.verify(signature, data, pss, hashes.SHA256())


def _flip(value, index=-1):
    return value[:index] + bytes([value[index] ^ 1]) + (value[index + 1 :] if index != -1 else b"")


class TestSign:
    """Sign: every algorithm, and every way a caller can get it wrong."""

    @pytest.mark.parametrize("key", list(KEYS))
    def test_signature_verifies_outside_the_broker(self, stub, key):
        """The daemon's signature verifies with plain pyca and the PEM from GetPublicKey."""
        algorithm, hash_name = KEYS[key]
        reply = _sign(stub, key)
        assert (reply.key, reply.key_version, reply.algorithm) == (key, 1, algorithm)
        _third_party_verify(_pem(stub, key), hash_name, reply.signature, b"invoice 42")
        with pytest.raises(InvalidSignature):
            _third_party_verify(_pem(stub, key), hash_name, reply.signature, b"invoice 43")

    @pytest.mark.skipif(OPENSSL is None, reason="openssl is not on PATH")
    @pytest.mark.parametrize("key", list(KEYS))
    def test_openssl_verifies(self, stub, key, tmp_path):
        """`openssl` verifies the signature too (dgst for ECDSA and PSS, pkeyutl for Ed25519)."""
        (tmp_path / "pub.pem").write_text(_pem(stub, key))
        (tmp_path / "msg").write_bytes(b"invoice 42")
        (tmp_path / "sig").write_bytes(_sign(stub, key).signature)
        hash_name = KEYS[key][1]
        files = ["-signature", "sig", "msg"]
        if hash_name is None:
            argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin"]
            argv += ["-in", "msg", "-sigfile", "sig"]
        elif key.startswith("pss"):
            argv = ["openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss"]
            argv += ["-sigopt", "rsa_pss_saltlen:32", "-verify", "pub.pem", *files]
        else:
            argv = ["openssl", "dgst", f"-{hash_name}", "-verify", "pub.pem", *files]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert "Verified OK" in done.stdout or "Signature Verified Successfully" in done.stdout

    @pytest.mark.parametrize("key", HASHED)
    def test_precomputed_digest(self, stub, key):
        """A signature over the digest verifies as a signature over the message."""
        digest = hashlib.new(KEYS[key][1], b"invoice 42").digest()
        signature = stub.Sign(pb.SignRequest(key=key, digest=digest)).signature
        _third_party_verify(_pem(stub, key), KEYS[key][1], signature, b"invoice 42")
        stub.Verify(pb.VerifyRequest(key=key, data=b"invoice 42", signature=signature))

    def test_wrong_digest_size(self, stub):
        """A digest of the wrong size is INVALID_ARGUMENT naming the size."""
        request = pb.SignRequest(key="signing", digest=b"\0" * 32)
        assert_fails(stub.Sign, request, INVALID, "INVALID_ARGUMENT", "digest must be 48 bytes")

    def test_ed25519_takes_no_digest(self, stub):
        """Ed25519 signs messages only."""
        request = pb.SignRequest(key="ed", digest=b"\0" * 32)
        assert_fails(stub.Sign, request, INVALID, "INVALID_ARGUMENT", "send data, not a digest")

    @pytest.mark.parametrize("key", ["default", "hmac", "rsa", "derive"])
    def test_wrong_key_type(self, stub, key):
        """Envelope, HMAC, RSA decryption and derivation keys cannot sign."""
        request = pb.SignRequest(key=key, data=b"x")
        assert_fails(stub.Sign, request, PRECONDITION, "WRONG_KEY_PURPOSE")

    def test_unknown_key(self, stub):
        """An unknown key is NOT_FOUND."""
        assert_fails(stub.Sign, pb.SignRequest(key="nope", data=b"x"), NOT_FOUND, "KEY_NOT_FOUND")

    def test_malformed_key_name(self, stub):
        """A malformed key name is INVALID_ARGUMENT before anything is looked up."""
        assert_fails(stub.Sign, pb.SignRequest(key="a b", data=b"x"), INVALID)

    def test_oversize_data(self, stub):
        """Data over server.max_plaintext_bytes is INVALID_ARGUMENT naming the limit."""
        request = pb.SignRequest(key="signing", data=b"x" * ((4 << 20) + 1))
        assert_fails(stub.Sign, request, INVALID, "INVALID_ARGUMENT", "server.max_plaintext_bytes")


class TestVerify:
    """Verify: valid signatures return the version; anything else is an error, never false."""

    @pytest.mark.parametrize("key", list(KEYS))
    def test_valid(self, stub, key):
        """A fresh signature verifies and names the version."""
        signature = _sign(stub, key).signature
        reply = stub.Verify(pb.VerifyRequest(key=key, data=b"invoice 42", signature=signature))
        assert (reply.key, reply.key_version) == (key, 1)

    @pytest.mark.parametrize("key", list(KEYS))
    @pytest.mark.parametrize("where", ["signature", "data"])
    def test_tampered(self, stub, key, where):
        """A flipped bit in the signature or the data is VERIFICATION_FAILED."""
        signature = _sign(stub, key).signature
        data = b"invoice 42"
        if where == "signature":
            signature = _flip(signature, len(signature) // 2)
        else:
            data = _flip(data)
        request = pb.VerifyRequest(key=key, data=data, signature=signature)
        exc = assert_fails(stub.Verify, request, INVALID, "VERIFICATION_FAILED")
        assert exc.details() == "verification failed"

    def test_signature_of_another_key(self, stub):
        """A valid signature by another key of the same type does not verify."""
        signature = _sign(stub, "ed").signature
        request = pb.VerifyRequest(key="rot-sig", data=b"invoice 42", signature=signature)
        assert_fails(stub.Verify, request, INVALID, "VERIFICATION_FAILED")

    def test_oversize_signature(self, stub):
        """Signatures over 1024 bytes are INVALID_ARGUMENT naming the bound."""
        request = pb.VerifyRequest(key="signing", data=b"x", signature=b"s" * 1025)
        assert_fails(stub.Verify, request, INVALID, "INVALID_ARGUMENT", "1024 bytes")

    def test_unknown_version(self, stub):
        """A version the key does not have is FAILED_PRECONDITION."""
        signature = _sign(stub, "signing").signature
        request = pb.VerifyRequest(key="signing", data=b"invoice 42", signature=signature)
        request.key_version = 9
        assert_fails(stub.Verify, request, PRECONDITION, "KEY_STATE", "no such key version")

    @pytest.mark.parametrize(("key", "code"), [("default", PRECONDITION), ("nope", NOT_FOUND)])
    def test_wrong_or_unknown_key(self, stub, key, code):
        """An envelope key is FAILED_PRECONDITION; an unknown key NOT_FOUND."""
        assert_fails(stub.Verify, pb.VerifyRequest(key=key, data=b"x", signature=b"s"), code)

    def test_oversize_data(self, stub):
        """Data over server.max_plaintext_bytes is INVALID_ARGUMENT naming the limit."""
        request = pb.VerifyRequest(key="signing", data=b"x" * ((4 << 20) + 1), signature=b"s")
        assert_fails(
            stub.Verify, request, INVALID, "INVALID_ARGUMENT", "server.max_plaintext_bytes"
        )


class TestBatches:
    """SignBatch and VerifyBatch: items fail independently, in request order."""

    def test_sign_batch(self, stub):
        """Good items are signed; an unknown key and a wrong key type fail alone."""
        items = [
            pb.SignRequest(key="signing", data=b"a"),
            pb.SignRequest(key="nope", data=b"b"),
            pb.SignRequest(key="default", data=b"c"),
            pb.SignRequest(key="ed", data=b"d"),
        ]
        results = stub.SignBatch(pb.SignBatchRequest(items=items)).results
        assert [r.WhichOneof("result") for r in results] == [
            "response",
            "error",
            "error",
            "response",
        ]
        assert (results[1].error.code, results[1].error.reason) == (5, "KEY_NOT_FOUND")
        assert (results[2].error.code, results[2].error.reason) == (9, "WRONG_KEY_PURPOSE")
        stub.Verify(pb.VerifyRequest(key="ed", data=b"d", signature=results[3].response.signature))

    def test_verify_batch(self, stub):
        """A bad signature is a VERIFICATION_FAILED item; the others verify."""
        good = _sign(stub, "p256", b"a").signature
        items = [
            pb.VerifyRequest(key="p256", data=b"a", signature=good),
            pb.VerifyRequest(key="p256", data=b"b", signature=good),
        ]
        results = stub.VerifyBatch(pb.VerifyBatchRequest(items=items)).results
        assert results[0].response.key_version == 1
        assert (results[1].error.code, results[1].error.reason) == (3, "VERIFICATION_FAILED")

    def test_batch_limit(self, stub):
        """More than server.max_batch_items items fail the whole request."""
        request = pb.SignBatchRequest(items=[pb.SignRequest(key="signing")] * 1001)
        assert_fails(stub.SignBatch, request, INVALID, "INVALID_ARGUMENT", "server.max_batch_items")


class TestGetPublicKey:
    """GetPublicKey: the public half of signing and RSA decryption keys only."""

    def test_signing_key(self, stub):
        """A P-384 key's PEM, version and algorithm."""
        reply = stub.GetPublicKey(pb.GetPublicKeyRequest(key="signing"))
        public = serialization.load_pem_public_key(reply.pem.encode())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp384r1"
        assert (reply.key, reply.key_version) == ("signing", 1)
        assert reply.algorithm == pb.SIGNATURE_ALGORITHM_ECDSA_P384_SHA384

    def test_decryption_key_has_no_signature_algorithm(self, stub):
        """An RSA-OAEP key's PEM comes with SIGNATURE_ALGORITHM_UNSPECIFIED."""
        reply = stub.GetPublicKey(pb.GetPublicKeyRequest(key="rsa"))
        assert serialization.load_pem_public_key(reply.pem.encode()).key_size == 4096
        assert reply.algorithm == pb.SIGNATURE_ALGORITHM_UNSPECIFIED

    def test_no_private_material(self, stub):
        """The reply holds a public key and nothing else."""
        reply = stub.GetPublicKey(pb.GetPublicKeyRequest(key="pss3072"))
        assert reply.pem.startswith("-----BEGIN PUBLIC KEY-----")
        assert "PRIVATE" not in str(reply)

    @pytest.mark.parametrize(
        ("key", "code"),
        [
            ("default", PRECONDITION),
            ("hmac", PRECONDITION),
            ("derive", PRECONDITION),
            ("nope", NOT_FOUND),
        ],
    )
    def test_keys_without_public_half(self, stub, key, code):
        """Symmetric keys are FAILED_PRECONDITION; unknown keys NOT_FOUND."""
        assert_fails(stub.GetPublicKey, pb.GetPublicKeyRequest(key=key), code)


class TestRotation:
    """After RotateKey, new signatures use the new version and old ones still verify."""

    def test_old_signatures_verify_after_rotation(self, stub, keys_daemon):
        """Version 0 finds the old version; each version has its own public key."""
        old = _sign(stub, "rot-sig", b"before").signature
        rotated = keys_daemon.admin.RotateKey(admin_pb.RotateKeyRequest(key="rot-sig")).key
        assert rotated.current_version == 2
        new = _sign(stub, "rot-sig", b"after")
        assert new.key_version == 2
        assert (
            stub.Verify(pb.VerifyRequest(key="rot-sig", data=b"before", signature=old)).key_version
            == 1
        )
        assert (
            stub.Verify(
                pb.VerifyRequest(key="rot-sig", data=b"after", signature=new.signature)
            ).key_version
            == 2
        )
        assert _pem(stub, "rot-sig", 1) != _pem(stub, "rot-sig", 2) == _pem(stub, "rot-sig")
        _third_party_verify(_pem(stub, "rot-sig", 1), None, old, b"before")

    def test_explicit_version(self, stub):
        """Naming the wrong version fails even though another version would verify."""
        signature = _sign(stub, "rot-sig", b"x").signature
        request = pb.VerifyRequest(key="rot-sig", data=b"x", signature=signature, key_version=1)
        assert_fails(stub.Verify, request, INVALID, "VERIFICATION_FAILED")

    def test_disabled_version_refuses(self, stub, keys_daemon):
        """A disabled version no longer verifies, and naming it is FAILED_PRECONDITION."""
        old = stub.Sign(pb.SignRequest(key="rot-sig", data=b"y"))
        keys_daemon.admin.RotateKey(admin_pb.RotateKeyRequest(key="rot-sig"))
        update = admin_pb.UpdateKeyVersionRequest(
            key="rot-sig", version=old.key_version, state=admin_pb.KEY_VERSION_STATE_DISABLED
        )
        keys_daemon.admin.UpdateKeyVersion(update)
        request = pb.VerifyRequest(key="rot-sig", data=b"y", signature=old.signature)
        assert_fails(stub.Verify, request, INVALID, "VERIFICATION_FAILED")
        request.key_version = old.key_version
        exc = assert_fails(stub.Verify, request, PRECONDITION)
        assert reason(exc) == "KEY_STATE"
