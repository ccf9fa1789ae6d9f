import hashlib
import hmac

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.core.aead import (
    COMMITMENT_SIZE,
    DEK_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    AeadError,
    DataKey,
    KeyWipedError,
)

DEK = bytes(range(32))
OTHER_DEK = bytes(range(100, 132))
NONCE = b"\x01" * NONCE_SIZE


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 written out with hmac, to check the derivations independently."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


class TestDataKey:
    """DataKey: the keys derived from one DEK and the AES-GCM operations on them."""

    @pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
    def test_rejects_wrong_dek_size(self, size):
        """Only 32-byte DEKs are accepted."""
        with pytest.raises(ValueError, match="DEK must be 32 bytes"):
            DataKey.from_dek(bytes(size))

    def test_accepts_bytearray(self):
        """A DEK held in a bytearray works, and later changes to it do not affect the key."""
        held = bytearray(DEK)
        dk = DataKey.from_dek(held)
        held[:] = bytes(DEK_SIZE)
        assert dk.commitment == DataKey.from_dek(DEK).commitment

    def test_derivations_follow_the_spec(self):
        """Content key and commitment are HKDF-SHA256 of the DEK with the documented infos."""
        dk = DataKey.from_dek(DEK)
        assert dk.content_key() == _hkdf_sha256(DEK, b"", b"keybroker/v1/aes-256-gcm")
        assert dk.commitment == _hkdf_sha256(DEK, b"", b"keybroker/v1/commitment")
        assert len(dk.commitment) == COMMITMENT_SIZE

    def test_segment_key_follows_the_spec(self):
        """The segment cipher is AES-GCM under HKDF(DEK, salt, stream info)."""
        salt = bytes(range(16))
        cipher = DataKey.from_dek(DEK).segment_cipher(salt)
        expected = AESGCM(_hkdf_sha256(DEK, salt, b"keybroker/v1/stream-aes-256-gcm"))
        sealed = cipher.encrypt(NONCE, b"segment", b"aad")
        assert expected.decrypt(NONCE, sealed, b"aad") == b"segment"

    def test_segment_keys_differ_per_salt(self):
        """Two streams under one DEK use different keys."""
        dk = DataKey.from_dek(DEK)
        sealed = dk.segment_cipher(b"\x00" * 16).encrypt(NONCE, b"x", b"")
        with pytest.raises(InvalidTag):
            dk.segment_cipher(b"\x01" * 16).decrypt(NONCE, sealed, b"")

    @pytest.mark.parametrize("size", [0, 12, 15, 17, 32])
    def test_segment_cipher_rejects_wrong_salt_size(self, size):
        """The stream salt is exactly 16 bytes."""
        with pytest.raises(ValueError, match="stream salt must be 16 bytes"):
            DataKey.from_dek(DEK).segment_cipher(bytes(size))

    def test_content_key_is_not_the_dek(self):
        """A lease's content key never reveals the DEK itself."""
        assert DataKey.from_dek(DEK).content_key() != DEK

    def test_content_key_is_a_copy(self):
        """Changing a returned content key cannot corrupt the DataKey."""
        dk = DataKey.from_dek(DEK)
        key = bytearray(dk.content_key())
        key[0] ^= 1
        assert dk.open(NONCE, dk.seal(NONCE, b"p", b""), b"") == b"p"

    def test_seal_open_round_trip(self):
        """Sealed bytes open to the same plaintext with the same AAD."""
        dk = DataKey.from_dek(DEK)
        sealed = dk.seal(NONCE, b"plaintext", b"aad")
        assert len(sealed) == len(b"plaintext") + TAG_SIZE
        assert dk.open(NONCE, sealed, b"aad") == b"plaintext"

    def test_seal_rejects_wrong_nonce_size(self):
        """A nonce that is not 12 bytes is a programming error."""
        with pytest.raises(ValueError, match="nonce must be 12 bytes"):
            DataKey.from_dek(DEK).seal(bytes(11), b"p", b"")

    @pytest.mark.parametrize(
        "change",
        [
            lambda n, c, a: (n, c, a + b"x"),
            lambda n, c, a: (n, c[:-1], a),
            lambda n, c, a: (n, c[:1] + bytes([c[1] ^ 1]) + c[2:], a),
            lambda _n, c, a: (bytes(12), c, a),
            lambda n, c, a: (n[:11], c, a),
            lambda n, c, a: (n, c[:15], a),
            lambda n, _c, a: (n, b"", a),
        ],
        ids=["aad", "truncated", "flipped", "nonce", "short-nonce", "short", "empty"],
    )
    def test_open_fails_on_any_change(self, change):
        """Altered ciphertext, nonce or AAD all fail the same way."""
        dk = DataKey.from_dek(DEK)
        nonce, sealed, aad = change(NONCE, dk.seal(NONCE, b"plaintext", b"aad"), b"aad")
        with pytest.raises(AeadError) as caught:
            dk.open(nonce, sealed, aad)
        assert str(caught.value) == "authentication failed"

    def test_open_fails_under_another_dek(self):
        """Ciphertext sealed under one DEK does not open under another."""
        sealed = DataKey.from_dek(DEK).seal(NONCE, b"p", b"")
        with pytest.raises(AeadError):
            DataKey.from_dek(OTHER_DEK).open(NONCE, sealed, b"")

    def test_open_error_hides_the_cause(self):
        """The AeadError carries no chained exception that could leak detail."""
        dk = DataKey.from_dek(DEK)
        with pytest.raises(AeadError) as caught:
            dk.open(NONCE, bytes(32), b"")
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__

    def test_matches_own_commitment_only(self):
        """A DataKey recognises its own commitment and no other."""
        dk = DataKey.from_dek(DEK)
        assert dk.matches(dk.commitment)
        assert not dk.matches(DataKey.from_dek(OTHER_DEK).commitment)
        assert not dk.matches(dk.commitment[:-1])
        assert not dk.matches(b"")

    def test_wipe_zeroes_key_material(self):
        """After wipe the held DEK and content key bytes are all zero."""
        dk = DataKey.from_dek(DEK)
        dk.wipe()
        assert dk._dek == bytearray(DEK_SIZE)
        assert dk._content_key == bytearray(32)
        assert dk._aead is None

    @pytest.mark.parametrize(
        "use",
        [
            lambda dk: dk.seal(NONCE, b"p", b""),
            lambda dk: dk.open(NONCE, bytes(16), b""),
            lambda dk: dk.content_key(),
            lambda dk: dk.segment_cipher(bytes(16)),
        ],
        ids=["seal", "open", "content_key", "segment_cipher"],
    )
    def test_wiped_key_refuses_use(self, use):
        """A wiped key never encrypts under zeroed material; it raises KeyWipedError."""
        dk = DataKey.from_dek(DEK)
        dk.wipe()
        with pytest.raises(KeyWipedError, match="data key has been wiped"):
            use(dk)

    def test_wipe_twice_is_harmless(self):
        """Caches may wipe a key that is already wiped."""
        dk = DataKey.from_dek(DEK)
        dk.wipe()
        dk.wipe()
        assert "wiped" in repr(dk)

    def test_repr_shows_no_key_material(self):
        """Logging a DataKey never prints key bytes."""
        dk = DataKey.from_dek(DEK)
        text = repr(dk)
        for secret in (DEK, dk.content_key(), dk.commitment):
            assert secret.hex() not in text
        assert text == "<DataKey live>"
