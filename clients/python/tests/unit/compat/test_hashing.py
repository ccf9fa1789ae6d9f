import hashlib

import pytest

from keybroker_client.compat import exceptions, hashing


class TestHashData:
    """hashing.hash_data and hashing.verify_data_integrity, computed locally."""

    def test_sha256_known_answer(self, vectors):
        """The FIPS 180-2 "abc" vector comes out as lowercase hex."""
        v = vectors["sha256"]

        assert hashing.hash_data(bytes.fromhex(v["data"])) == v["digest"]

    def test_text_is_hashed_as_utf8(self):
        """A str is hashed as its UTF-8 bytes."""
        assert hashing.hash_data("abc") == hashlib.sha256(b"abc").hexdigest()

    def test_matching_digest_returns_true(self):
        """A matching hex digest (any case) verifies."""
        expected = hashing.hash_data(b"report").upper()

        assert hashing.verify_data_integrity(b"report", expected) is True

    def test_raw_digest_bytes_are_accepted(self):
        """The expected digest may be the raw 32 bytes."""
        assert hashing.verify_data_integrity(b"report", hashlib.sha256(b"report").digest())

    @pytest.mark.parametrize(
        "expected",
        [hashlib.sha256(b"other").hexdigest(), "abc", "zz" * 32, ""],
        ids=["other-data", "short", "not-hex", "empty"],
    )
    def test_mismatch_raises_hashing_error(self, expected):
        """Any other or malformed digest raises HashingError (also a VerificationError)."""
        with pytest.raises(exceptions.HashingError) as caught:
            hashing.verify_data_integrity(b"report", expected)

        assert caught.value.reason == "VERIFICATION_FAILED"


class TestHmacWithCallerKey:
    """hashing.hmac_sign / hmac_verify with a key the caller holds."""

    def test_rfc4231_case_2(self, vectors):
        """HMAC-SHA256 matches RFC 4231 test case 2, as lowercase hex."""
        v = vectors["hmac_sha256"]

        mac = hashing.hmac_sign(bytes.fromhex(v["data"]), bytes.fromhex(v["key"]))

        assert mac == v["mac"]

    def test_verify_accepts_the_hex_mac(self, vectors):
        """The known MAC verifies, as hex text or raw bytes."""
        v = vectors["hmac_sha256"]
        data, key = bytes.fromhex(v["data"]), bytes.fromhex(v["key"])

        assert hashing.hmac_verify(data, key, v["mac"]) is True
        assert hashing.hmac_verify(data, key, bytes.fromhex(v["mac"])) is True

    @pytest.mark.parametrize("change", ["data", "mac", "key"])
    def test_any_change_raises_hashing_error(self, change):
        """Changing the data, the MAC or the key fails verification."""
        data, key = b"amount=100", b"k" * 32
        mac = hashing.hmac_sign(data, key)
        if change == "data":
            data = b"amount=900"
        elif change == "mac":
            mac = ("0" if mac[0] != "0" else "1") + mac[1:]
        else:
            key = b"j" * 32

        with pytest.raises(exceptions.HashingError, match="HMAC verification failed") as caught:
            hashing.hmac_verify(data, key, mac)

        assert isinstance(caught.value, exceptions.VerificationError)

    def test_truncated_mac_raises(self):
        """A prefix of the right MAC is not accepted."""
        mac = hashing.hmac_sign(b"x", b"k")

        with pytest.raises(exceptions.HashingError):
            hashing.hmac_verify(b"x", b"k", mac[:32])

    def test_empty_key_is_refused(self):
        """An empty key authenticates nothing and is refused."""
        with pytest.raises(exceptions.InvalidParameterError, match="key must not be empty"):
            hashing.hmac_sign(b"x", b"")

    def test_comparison_is_constant_time(self, monkeypatch):
        """Verification goes through hmac.compare_digest."""
        calls = []
        real = hashing._hmac.compare_digest

        def spy(a, b):
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hashing._hmac, "compare_digest", spy)

        hashing.hmac_verify(b"x", b"k", hashing.hmac_sign(b"x", b"k"))

        assert len(calls) == 1

    def test_keywords_are_the_seeds(self):
        """hmac_verify(data=, key=, expected_hmac=) in the seed's order."""
        mac = hashing.hmac_sign(data=b"payload", key=b"k" * 32)

        assert hashing.hmac_verify(data=b"payload", key=b"k" * 32, expected_hmac=mac) is True
