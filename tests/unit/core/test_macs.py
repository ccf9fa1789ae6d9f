import hashlib
import hmac
import json
from pathlib import Path

import pytest

from broker.core.macs import (
    BLIND_INDEX_INFO,
    MacInputError,
    MacMismatchError,
    blind_index_label,
    derived_mac,
    hmac_sha256,
    verify_hmac_sha256,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
RFC4231 = [
    pytest.param(v, id=v["description"])
    for v in json.loads((VECTORS / "hmac-sha256-rfc4231.json").read_text("utf-8"))["vectors"]
]


def _reference_index(key: bytes, field: str, tenant: str, value: bytes, length: int) -> bytes:
    """The blind index straight from the module docstring, with the stdlib only."""
    f, t = field.encode(), tenant.encode()
    context = (
        b"\x00\x02"
        b"\x00\x05field"
        + len(f).to_bytes(2, "big")
        + f
        + b"\x00\x06tenant"
        + len(t).to_bytes(2, "big")
        + t
    )
    prk = hmac.new(bytes(32), key, hashlib.sha256).digest()
    sub_key = hmac.new(prk, BLIND_INDEX_INFO + context + b"\x01", hashlib.sha256).digest()
    return hmac.new(sub_key, value, hashlib.sha256).digest()[:length]


class TestHmacSha256:
    """hmac_sha256 and verify_hmac_sha256."""

    @pytest.mark.parametrize("vector", RFC4231)
    def test_rfc4231(self, vector):
        """The MAC matches RFC 4231 test cases 1-4, 6 and 7."""
        key, data = bytes.fromhex(vector["key"]), bytes.fromhex(vector["data"])
        assert hmac_sha256(key, data).hex() == vector["mac"]

    @pytest.mark.parametrize("vector", RFC4231)
    def test_rfc4231_verifies(self, vector):
        """The RFC's MAC verifies."""
        key, data = bytes.fromhex(vector["key"]), bytes.fromhex(vector["data"])
        verify_hmac_sha256(key, data, bytes.fromhex(vector["mac"]))

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda mac: mac[:-1] + bytes([mac[-1] ^ 1]),
            lambda mac: mac[:16],
            lambda mac: mac + b"\x00",
            lambda _: b"",
        ],
        ids=["flipped-bit", "truncated", "extended", "empty"],
    )
    def test_altered_mac_is_refused(self, mutate):
        """Any change to the MAC, including its length, fails with the fixed message."""
        mac = hmac_sha256(b"k" * 32, b"data")
        with pytest.raises(MacMismatchError, match=r"^MAC verification failed$"):
            verify_hmac_sha256(b"k" * 32, b"data", mutate(mac))

    def test_other_data_is_refused(self):
        """A MAC over other data does not verify."""
        with pytest.raises(MacMismatchError):
            verify_hmac_sha256(b"k" * 32, b"datb", hmac_sha256(b"k" * 32, b"data"))


class TestBlindIndex:
    """blind_index_label and derived_mac: deterministic, scoped indexes."""

    def test_matches_the_documented_construction(self):
        """HKDF-SHA256 of the key for the (field, tenant) label, then truncated HMAC."""
        key = bytes(range(32))
        label = blind_index_label("email", "acme")
        got = derived_mac(key, label, b"a@example.com", 24)
        assert got == _reference_index(key, "email", "acme", b"a@example.com", 24)

    def test_deterministic(self):
        """The same inputs always give the same index."""
        label = blind_index_label("email", "acme")
        assert derived_mac(b"k" * 32, label, b"v") == derived_mac(b"k" * 32, label, b"v")

    @pytest.mark.parametrize(("field", "tenant"), [("login", "acme"), ("email", "globex")])
    def test_field_and_tenant_separate_indexes(self, field, tenant):
        """Another field or tenant gives another index for the same value."""
        base = derived_mac(b"k" * 32, blind_index_label("email", "acme"), b"v")
        assert derived_mac(b"k" * 32, blind_index_label(field, tenant), b"v") != base

    def test_labels_are_unambiguous(self):
        """Moving characters between field and tenant changes the label."""
        assert blind_index_label("ab", "c") != blind_index_label("a", "bc")

    @pytest.mark.parametrize("length", [16, 20, 32])
    def test_lengths(self, length):
        """Any length from 16 to 32 bytes is a prefix of the full index."""
        label = blind_index_label("f", "t")
        assert (
            derived_mac(b"k" * 32, label, b"v", length)
            == derived_mac(b"k" * 32, label, b"v", 32)[:length]
        )

    @pytest.mark.parametrize("length", [0, 15, 33])
    def test_length_bounds(self, length):
        """Lengths outside 16..32 are refused, naming the bounds."""
        with pytest.raises(MacInputError, match=r"length must be 16\.\.32 bytes"):
            derived_mac(b"k" * 32, blind_index_label("f", "t"), b"v", length)

    def test_empty_field_is_refused(self):
        """An index needs a field name."""
        with pytest.raises(MacInputError, match="field must not be empty"):
            blind_index_label("", "t")

    def test_oversize_tenant_is_refused(self):
        """A tenant over the context value bound is refused without echoing it."""
        with pytest.raises(MacInputError, match="at most 2048 bytes") as info:
            blind_index_label("f", "x" * 2049)
        assert "xxx" not in str(info.value)
