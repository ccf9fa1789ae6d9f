import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from broker.core.asymmetric import (
    OaepDecryptionError,
    OaepInputError,
    decrypt,
    encrypt,
    generate_private_key,
    load_private_key,
    load_public_key,
    max_plaintext,
    public_pem,
)

PYCA_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def private_key():
    """One RSA-4096 key for the module (generating one takes about a second)."""
    return load_private_key(generate_private_key())


@pytest.fixture(scope="module")
def public_key(private_key):
    """Its public half, through PEM as a client would get it."""
    return load_public_key(public_pem(private_key))


class TestRsaOaep:
    """encrypt/decrypt: RSA-4096-OAEP with SHA-256 and MGF1-SHA-256."""

    def test_round_trip(self, private_key, public_key):
        """What the public key encrypts the private key decrypts."""
        assert decrypt(private_key, encrypt(public_key, b"card 4111")) == b"card 4111"

    def test_interoperates_with_plain_pyca(self, private_key, public_key):
        """Ciphertexts from plain pyca OAEP-SHA256 decrypt, and ours decrypt with plain pyca."""
        assert decrypt(private_key, public_key.encrypt(b"x", PYCA_OAEP)) == b"x"
        assert private_key.decrypt(encrypt(public_key, b"y"), PYCA_OAEP) == b"y"

    def test_limit_is_446_bytes(self, private_key, public_key):
        """446 bytes fit; 447 fail with a message naming both sizes."""
        assert max_plaintext(public_key) == 446
        assert decrypt(private_key, encrypt(public_key, b"a" * 446)) == b"a" * 446
        with pytest.raises(OaepInputError) as info:
            encrypt(public_key, b"a" * 447)
        assert str(info.value) == "plaintext is 447 bytes; RSA-4096-OAEP-SHA256 takes at most 446"

    def test_label_is_bound(self, private_key, public_key):
        """A ciphertext made with a label opens only with that label."""
        ciphertext = encrypt(public_key, b"x", b"invoices")
        assert decrypt(private_key, ciphertext, b"invoices") == b"x"
        with pytest.raises(OaepDecryptionError):
            decrypt(private_key, ciphertext)

    @pytest.mark.parametrize(
        "mutate",
        [lambda c: c[:10] + bytes([c[10] ^ 1]) + c[11:], lambda c: c[:-1], lambda c: c + b"\0"],
        ids=["flipped-bit", "short", "long"],
    )
    def test_altered_ciphertext(self, private_key, public_key, mutate):
        """Any change fails with the same fixed message."""
        ciphertext = encrypt(public_key, b"x")
        with pytest.raises(OaepDecryptionError, match=r"^ciphertext could not be decrypted$"):
            decrypt(private_key, mutate(ciphertext))

    def test_oversize_label(self, public_key):
        """Labels over 1024 bytes are refused."""
        with pytest.raises(OaepInputError, match="label is longer than 1024 bytes"):
            encrypt(public_key, b"x", b"l" * 1025)

    def test_other_key_sizes_are_refused(self):
        """Only RSA-4096 private keys load as decryption keys."""
        small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = small.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(OaepInputError, match="not an rsa-oaep-4096-sha256 private key"):
            load_private_key(der)
