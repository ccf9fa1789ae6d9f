import base64

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keybroker_client.compat import exceptions, symmetric

KEY = bytes(range(32))


def unpack(text):
    """Split the seed's base64 text into (nonce, ciphertext, tag)."""
    raw = base64.b64decode(text, validate=True)
    return raw[:12], raw[12:-16], raw[-16:]


class TestGenerateKey:
    """symmetric.generate_key."""

    def test_returns_32_fresh_random_bytes(self):
        """Each key is 256 bits and keys differ."""
        first, second = symmetric.generate_key(), symmetric.generate_key()

        assert len(first) == 32
        assert first != second


class TestEncrypt:
    """symmetric.encrypt with a caller-held key, in the seed's wire format."""

    def test_wire_format_is_base64_of_nonce_ciphertext_tag(self):
        """The text is standard base64 of nonce(12) ‖ ciphertext ‖ tag(16), readable by pyca."""
        text = symmetric.encrypt(b"card 4111", KEY, b"row-7")

        nonce, ciphertext, tag = unpack(text)
        assert len(nonce) == 12
        assert len(ciphertext) == len(b"card 4111")
        assert len(tag) == 16
        assert AESGCM(KEY).decrypt(nonce, ciphertext + tag, b"row-7") == b"card 4111"

    def test_each_call_uses_a_fresh_nonce(self):
        """Encrypting the same plaintext twice gives different texts."""
        first = symmetric.encrypt(b"same", KEY)
        second = symmetric.encrypt(b"same", KEY)

        assert unpack(first)[0] != unpack(second)[0]

    def test_text_plaintext_is_utf8(self):
        """A str plaintext is encrypted as its UTF-8 bytes."""
        text = symmetric.encrypt("clé", KEY)

        assert symmetric.decrypt(text, KEY) == "clé".encode()

    @pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
    def test_key_must_be_32_bytes(self, size):
        """Any key other than 256 bits is refused before encrypting."""
        with pytest.raises(exceptions.InvalidParameterError, match="32 bytes"):
            symmetric.encrypt(b"x", bytes(size))

    def test_text_key_is_a_type_error(self):
        """A str key is a programming error, not a parameter value."""
        with pytest.raises(TypeError, match="key must be bytes"):
            symmetric.encrypt(b"x", "k" * 32)


class TestDecrypt:
    """symmetric.decrypt: known answer, tampering and malformed input."""

    def test_decrypts_the_gcm_spec_vector(self, vectors):
        """The GCM specification's AES-256 test case, in the seed's format, decrypts."""
        v = vectors["aes_256_gcm"]
        text = base64.b64encode(bytes.fromhex(v["nonce"] + v["ciphertext"] + v["tag"])).decode()

        plaintext = symmetric.decrypt(
            text, bytes.fromhex(v["key"]), bytes.fromhex(v["associated_data"])
        )

        assert plaintext == bytes.fromhex(v["plaintext"])

    def test_accepts_ascii_bytes(self):
        """The base64 text may be given as ASCII bytes (a bytes column)."""
        text = symmetric.encrypt(b"x", KEY)

        assert symmetric.decrypt(text.encode(), KEY) == b"x"

    @pytest.mark.parametrize("position", [0, 12, -1], ids=["nonce", "ciphertext", "tag"])
    def test_tampered_byte_is_a_decryption_error(self, position):
        """Flipping one bit anywhere fails authentication with the fixed message."""
        raw = bytearray(base64.b64decode(symmetric.encrypt(b"card 4111", KEY)))
        raw[position] ^= 1
        tampered = base64.b64encode(bytes(raw)).decode()

        with pytest.raises(exceptions.DecryptionError) as caught:
            symmetric.decrypt(tampered, KEY)

        assert str(caught.value) == "ciphertext could not be decrypted"
        assert caught.value.reason == "DECRYPTION_FAILED"

    def test_wrong_associated_data_is_a_decryption_error(self):
        """Associated data is authenticated: another value fails."""
        text = symmetric.encrypt(b"card", KEY, b"row-7")

        with pytest.raises(exceptions.DecryptionError):
            symmetric.decrypt(text, KEY, b"row-8")

    def test_wrong_key_is_a_decryption_error(self):
        """Another key fails with the same fixed message."""
        text = symmetric.encrypt(b"card", KEY)

        with pytest.raises(exceptions.DecryptionError, match="could not be decrypted"):
            symmetric.decrypt(text, bytes(32))

    @pytest.mark.parametrize(
        "text",
        ["not base64!", base64.b64encode(bytes(27)).decode(), "é"],
        ids=["not-base64", "shorter-than-nonce-and-tag", "non-ascii"],
    )
    def test_malformed_text_is_a_decryption_error(self, text):
        """Text that cannot be a sealed message fails like a tampered one."""
        with pytest.raises(exceptions.DecryptionError, match="could not be decrypted"):
            symmetric.decrypt(text, KEY)

    def test_tag_failure_chains_only_pyca_invalid_tag(self):
        """The seed's cause is pyca's InvalidTag, which carries no detail about the data."""
        text = symmetric.encrypt(b"card", KEY)

        with pytest.raises(exceptions.DecryptionError) as caught:
            symmetric.decrypt(text, bytes(32))

        assert isinstance(caught.value.cause, InvalidTag)
        assert caught.value.__cause__ is caught.value.cause
        assert str(caught.value.cause) == ""

    def test_keywords_are_the_seeds(self):
        """encrypt(plaintext=, key=, associated_data=) and decrypt(encrypted_data=, ...)."""
        text = symmetric.encrypt(plaintext=b"x", key=KEY, associated_data=b"a")

        assert symmetric.decrypt(encrypted_data=text, key=KEY, associated_data=b"a") == b"x"

    def test_failed_encryption_is_an_encryption_error(self, monkeypatch):
        """AES-GCM refusing to encrypt (over 2^36 bytes) raises EncryptionError with the cause."""

        class Refusing:
            def __init__(self, key):
                self.key = key

            def encrypt(self, *_args):
                raise OverflowError("Data or associated data too long")

        monkeypatch.setattr(symmetric, "AESGCM", Refusing)

        with pytest.raises(exceptions.EncryptionError, match="too large") as caught:
            symmetric.encrypt(b"x", KEY)

        assert isinstance(caught.value.cause, OverflowError)
