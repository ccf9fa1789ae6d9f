import base64

import pytest
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keybroker_client.compat import asymmetric, exceptions

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def rsa_pair():
    """One RSA-4096 pair from the compat API (generation takes a moment)."""
    return asymmetric.generate_rsa_key_pair()


@pytest.fixture(scope="module")
def other_rsa_private_pem():
    """An unrelated RSA private key, made with pyca directly."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TestRsa:
    """RSA-4096-OAEP on PEM keys the caller holds, in the seed's formats."""

    def test_pair_is_pkcs8_and_spki_pem_of_4096_bits(self, rsa_pair):
        """Private key PKCS#8 without encryption, public key SubjectPublicKeyInfo."""
        private_pem, public_pem = rsa_pair

        assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
        assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
        key = serialization.load_pem_private_key(private_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == 4096

    def test_ciphertext_is_base64_oaep_sha256(self, rsa_pair):
        """Pyca opens the base64 ciphertext with OAEP SHA-256 / MGF1-SHA-256."""
        private_pem, public_pem = rsa_pair

        text = asymmetric.rsa_encrypt(plaintext=b"secret", public_key_pem=public_pem)

        key = serialization.load_pem_private_key(private_pem, password=None)
        assert key.decrypt(base64.b64decode(text, validate=True), OAEP) == b"secret"

    def test_decrypts_what_pyca_encrypted(self, rsa_pair):
        """A ciphertext made by another OAEP-SHA256 implementation decrypts."""
        private_pem, public_pem = rsa_pair
        public_key = serialization.load_pem_public_key(public_pem)
        text = base64.b64encode(public_key.encrypt(b"from pyca", OAEP)).decode()

        assert asymmetric.rsa_decrypt(encrypted_data=text, private_key_pem=private_pem) == (
            b"from pyca"
        )

    def test_largest_plaintext_is_446_bytes(self, rsa_pair):
        """446 bytes fit a 4096-bit key with OAEP-SHA256; 447 raise EncryptionError."""
        private_pem, public_pem = rsa_pair

        text = asymmetric.rsa_encrypt(b"x" * 446, public_pem)
        assert asymmetric.rsa_decrypt(text, private_pem) == b"x" * 446
        with pytest.raises(exceptions.EncryptionError, match="too large") as caught:
            asymmetric.rsa_encrypt(b"x" * 447, public_pem)
        assert isinstance(caught.value.cause, ValueError)

    def test_probabilistic(self, rsa_pair):
        """The same plaintext gives a different ciphertext each time."""
        _, public_pem = rsa_pair

        assert asymmetric.rsa_encrypt(b"a", public_pem) != asymmetric.rsa_encrypt(b"a", public_pem)

    @pytest.mark.parametrize("tamper", ["wrong-key", "flipped", "not-base64"])
    def test_failures_are_decryption_errors(self, rsa_pair, other_rsa_private_pem, tamper):
        """Another key, a flipped byte or text that is not base64 raise DecryptionError."""
        private_pem, public_pem = rsa_pair
        text = asymmetric.rsa_encrypt(b"secret", public_pem)
        if tamper == "wrong-key":
            private_pem = other_rsa_private_pem
        elif tamper == "flipped":
            raw = bytearray(base64.b64decode(text))
            raw[10] ^= 1
            text = base64.b64encode(bytes(raw)).decode()
        else:
            text = "!!"

        with pytest.raises(exceptions.DecryptionError, match="could not be decrypted"):
            asymmetric.rsa_decrypt(text, private_pem)

    def test_ecdsa_key_is_not_an_rsa_key(self):
        """Passing an ECDSA public key to rsa_encrypt is a parameter error naming the field."""
        _, ec_public = asymmetric.generate_ecdsa_key_pair()

        with pytest.raises(exceptions.InvalidParameterError, match="not an RSA public key"):
            asymmetric.rsa_encrypt(b"x", ec_public)

    def test_garbage_pem_is_a_parameter_error(self):
        """Bytes that are not PEM are refused with the field's name."""
        with pytest.raises(exceptions.InvalidParameterError, match="private_key_pem"):
            asymmetric.rsa_decrypt("AAAA", b"not a pem")

    def test_generation_failure_is_a_key_generation_error(self, monkeypatch):
        """A failing key generator raises KeyGenerationError with the cause."""

        def failing(**_kwargs):
            raise UnsupportedAlgorithm("no RSA here")

        monkeypatch.setattr(asymmetric.rsa, "generate_private_key", failing)

        with pytest.raises(exceptions.KeyGenerationError) as caught:
            asymmetric.generate_rsa_key_pair()

        assert isinstance(caught.value.cause, UnsupportedAlgorithm)


class TestEcdsa:
    """ECDSA P-384 with SHA-384 on PEM keys the caller holds."""

    def test_pair_is_p384(self):
        """The key pair is on SECP384R1, serialized as PKCS#8 / SubjectPublicKeyInfo PEM."""
        private_pem, public_pem = asymmetric.generate_ecdsa_key_pair()

        key = serialization.load_pem_private_key(private_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP384R1)
        assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")

    def test_signature_is_base64_der_sha384(self):
        """Pyca verifies the base64-decoded DER signature with ECDSA SHA-384."""
        private_pem, public_pem = asymmetric.generate_ecdsa_key_pair()

        signature = asymmetric.sign(data=b"document", private_key_pem=private_pem)

        public_key = serialization.load_pem_public_key(public_pem)
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, b"document", ec.ECDSA(hashes.SHA384()))

    def test_verifies_a_pyca_signature(self):
        """A signature made by pyca with the private key verifies, returning True."""
        private_pem, public_pem = asymmetric.generate_ecdsa_key_pair()
        key = serialization.load_pem_private_key(private_pem, password=None)
        signature = base64.b64encode(key.sign(b"doc", ec.ECDSA(hashes.SHA384()))).decode()

        assert asymmetric.verify(data=b"doc", signature=signature, public_key_pem=public_pem)

    @pytest.mark.parametrize("change", ["data", "signature", "not-base64"])
    def test_invalid_signature_raises(self, change):
        """Other data or a changed signature raise VerificationError, never return False."""
        private_pem, public_pem = asymmetric.generate_ecdsa_key_pair()
        data, signature = b"doc", asymmetric.sign(b"doc", private_pem)
        if change == "data":
            data = b"doc2"
        elif change == "signature":
            signature = asymmetric.sign(b"other", private_pem)
        else:
            signature = "%%"

        with pytest.raises(exceptions.VerificationError, match="signature is invalid") as caught:
            asymmetric.verify(data, signature, public_pem)

        if change != "not-base64":
            assert isinstance(caught.value.cause, InvalidSignature)

    def test_signing_failure_is_a_signing_error(self, monkeypatch):
        """A signer that refuses raises SigningError with the cause."""
        private_pem, _ = asymmetric.generate_ecdsa_key_pair()

        def refusing(_algorithm):
            raise UnsupportedAlgorithm("no SHA-384 here")

        monkeypatch.setattr(asymmetric.ec, "ECDSA", refusing)

        with pytest.raises(exceptions.SigningError) as caught:
            asymmetric.sign(b"doc", private_pem)

        assert isinstance(caught.value.cause, UnsupportedAlgorithm)

    def test_rsa_key_cannot_sign(self, other_rsa_private_pem):
        """RSA key pairs are for encryption: signing with one is a parameter error."""
        with pytest.raises(exceptions.InvalidParameterError, match="not an ECDSA private key"):
            asymmetric.sign(b"doc", other_rsa_private_pem)
