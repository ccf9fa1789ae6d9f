"""AsymmetricService (RSA-4096-OAEP-SHA256) over a real socket against the keys daemon."""

from __future__ import annotations

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from support.rpc import assert_fails

from broker.rpc.gen import asymmetric_pb2 as pb
from broker.rpc.gen import asymmetric_pb2_grpc, signing_pb2, signing_pb2_grpc
from broker.rpc.gen import key_admin_pb2 as admin_pb

INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def stub(keys_daemon):
    """AsymmetricService stub on the shared keys daemon."""
    return asymmetric_pb2_grpc.AsymmetricServiceStub(keys_daemon.channel)


def _encrypt(stub, plaintext, key="rsa", label=b""):
    return stub.AsymmetricEncrypt(
        pb.AsymmetricEncryptRequest(key=key, plaintext=plaintext, label=label)
    )


def _decrypt(stub, ciphertext, key="rsa", label=b"", version=0):
    request = pb.AsymmetricDecryptRequest(
        key=key, ciphertext=ciphertext, label=label, key_version=version
    )
    return stub.AsymmetricDecrypt(request).plaintext


class TestEncryptDecrypt:
    """AsymmetricEncrypt and AsymmetricDecrypt."""

    def test_round_trip(self, stub):
        """The broker decrypts what it encrypted, and names the key version."""
        reply = _encrypt(stub, b"card 4111")
        assert (reply.key, reply.key_version, len(reply.ciphertext)) == ("rsa", 1, 512)
        assert _decrypt(stub, reply.ciphertext) == b"card 4111"

    def test_offline_encryption_with_the_pem(self, stub, keys_daemon):
        """A ciphertext made by plain pyca with the PEM from GetPublicKey decrypts."""
        signing = signing_pb2_grpc.SigningServiceStub(keys_daemon.channel)
        pem = signing.GetPublicKey(signing_pb2.GetPublicKeyRequest(key="rsa")).pem
        public = serialization.load_pem_public_key(pem.encode())
        assert _decrypt(stub, public.encrypt(b"from elsewhere", OAEP)) == b"from elsewhere"

    def test_label_is_bound(self, stub):
        """A ciphertext made with a label decrypts only with that label."""
        ciphertext = _encrypt(stub, b"x", label=b"invoices").ciphertext
        assert _decrypt(stub, ciphertext, label=b"invoices") == b"x"
        request = pb.AsymmetricDecryptRequest(key="rsa", ciphertext=ciphertext)
        assert_fails(stub.AsymmetricDecrypt, request, INVALID, "DECRYPTION_FAILED")

    def test_largest_plaintext_and_one_more(self, stub):
        """446 bytes fit; 447 are INVALID_ARGUMENT with a message naming both sizes."""
        assert _decrypt(stub, _encrypt(stub, b"a" * 446).ciphertext) == b"a" * 446
        request = pb.AsymmetricEncryptRequest(key="rsa", plaintext=b"a" * 447)
        exc = assert_fails(stub.AsymmetricEncrypt, request, INVALID, "INVALID_ARGUMENT")
        assert exc.details() == "plaintext is 447 bytes; RSA-4096-OAEP-SHA256 takes at most 446"

    @pytest.mark.parametrize("index", [0, 10, 511])
    def test_tampered_ciphertext(self, stub, index):
        """A flipped bit anywhere is INVALID_ARGUMENT with the fixed decryption message."""
        ciphertext = bytearray(_encrypt(stub, b"card").ciphertext)
        ciphertext[index] ^= 1
        request = pb.AsymmetricDecryptRequest(key="rsa", ciphertext=bytes(ciphertext))
        exc = assert_fails(stub.AsymmetricDecrypt, request, INVALID, "DECRYPTION_FAILED")
        assert exc.details() == "ciphertext could not be decrypted"

    def test_oversize_inputs(self, stub):
        """Ciphertexts over 1024 bytes and labels over 1024 bytes name their bounds."""
        request = pb.AsymmetricDecryptRequest(key="rsa", ciphertext=b"c" * 1025)
        assert_fails(stub.AsymmetricDecrypt, request, INVALID, "INVALID_ARGUMENT", "1024 bytes")
        request = pb.AsymmetricEncryptRequest(key="rsa", plaintext=b"x", label=b"l" * 1025)
        assert_fails(stub.AsymmetricEncrypt, request, INVALID, "INVALID_ARGUMENT", "1024 bytes")

    @pytest.mark.parametrize("key", ["default", "signing", "pss4096", "hmac"])
    def test_wrong_key_type(self, stub, key):
        """Only asymmetric_decrypt keys encrypt and decrypt (an RSA-PSS key neither)."""
        request = pb.AsymmetricEncryptRequest(key=key, plaintext=b"x")
        assert_fails(stub.AsymmetricEncrypt, request, PRECONDITION, "WRONG_KEY_PURPOSE")
        request = pb.AsymmetricDecryptRequest(key=key, ciphertext=b"\0" * 512)
        assert_fails(stub.AsymmetricDecrypt, request, PRECONDITION, "WRONG_KEY_PURPOSE")

    def test_unknown_key(self, stub):
        """An unknown key is NOT_FOUND on both sides."""
        request = pb.AsymmetricEncryptRequest(key="nope", plaintext=b"x")
        assert_fails(stub.AsymmetricEncrypt, request, NOT_FOUND, "KEY_NOT_FOUND")
        request = pb.AsymmetricDecryptRequest(key="nope", ciphertext=b"\0" * 512)
        assert_fails(stub.AsymmetricDecrypt, request, NOT_FOUND, "KEY_NOT_FOUND")


class TestRotation:
    """After RotateKey, old ciphertexts decrypt with their version; new ones use the new key."""

    def test_versions(self, stub, keys_daemon):
        """Version 1's ciphertext needs key_version=1; the current version cannot open it."""
        old = _encrypt(stub, b"before", key="rot-rsa")
        keys_daemon.admin.RotateKey(admin_pb.RotateKeyRequest(key="rot-rsa"))
        new = _encrypt(stub, b"after", key="rot-rsa")
        assert (old.key_version, new.key_version) == (1, 2)
        assert _decrypt(stub, old.ciphertext, key="rot-rsa", version=1) == b"before"
        assert _decrypt(stub, new.ciphertext, key="rot-rsa") == b"after"
        request = pb.AsymmetricDecryptRequest(key="rot-rsa", ciphertext=old.ciphertext)
        assert_fails(stub.AsymmetricDecrypt, request, INVALID, "DECRYPTION_FAILED")
        request.key_version = 3
        assert_fails(stub.AsymmetricDecrypt, request, PRECONDITION, "KEY_STATE")
