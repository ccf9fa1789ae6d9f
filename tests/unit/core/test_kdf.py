import json
from pathlib import Path

import pytest

from broker.core.context import canonical_context
from broker.core.kdf import (
    KdfInputError,
    check_length,
    check_pbkdf2,
    derivation_info,
    hkdf_sha256,
    pbkdf2_sha256,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def _load(name):
    document = json.loads((VECTORS / name).read_text("utf-8"))
    return [pytest.param(v, id=v["description"]) for v in document["vectors"]]


class TestHkdf:
    """hkdf_sha256: RFC 5869 HKDF with SHA-256."""

    @pytest.mark.parametrize("vector", _load("hkdf-sha256-rfc5869.json"))
    def test_rfc5869(self, vector):
        """The output matches RFC 5869 test cases 1-3 (case 3: empty salt and info)."""
        okm = hkdf_sha256(
            bytes.fromhex(vector["ikm"]),
            salt=bytes.fromhex(vector["salt"]),
            info=bytes.fromhex(vector["info"]),
            length=vector["length"],
        )
        assert okm.hex() == vector["okm"]

    @pytest.mark.parametrize("length", [0, 255 * 32 + 1])
    def test_output_bounds(self, length):
        """HKDF cannot produce nothing or more than 255 blocks."""
        with pytest.raises(KdfInputError, match="output must be"):
            hkdf_sha256(b"k", salt=b"", info=b"", length=length)

    def test_oversize_salt(self):
        """Salts over 1024 bytes are refused."""
        with pytest.raises(KdfInputError, match="salt is longer than 1024 bytes"):
            hkdf_sha256(b"k", salt=b"s" * 1025, info=b"", length=32)


class TestDerivationInfo:
    """derivation_info: how a named secret's caller info and context become HKDF info."""

    def test_layout(self):
        """A 2-byte length, the info, then the canonical context."""
        assert derivation_info(b"db", {"t": "a"}) == (
            b"\x00\x02db" + b"\x00\x01" + b"\x00\x01t\x00\x01a"
        )

    def test_no_split_collides(self):
        """Info that looks like an encoded context cannot stand in for a real context."""
        forged = b"\x00\x01\x00\x01k"
        assert forged + canonical_context({}) == canonical_context({"k": ""})  # without framing
        assert derivation_info(forged, {}) != derivation_info(b"", {"k": ""})

    def test_oversize_info(self):
        """Info over 1024 bytes is refused, naming the bound."""
        with pytest.raises(KdfInputError, match="info is longer than 1024 bytes"):
            derivation_info(b"i" * 1025, {})

    def test_bad_context(self):
        """A context breaking its bounds is refused with the context's own message."""
        with pytest.raises(KdfInputError, match="encryption context key"):
            derivation_info(b"", {"": "v"})


class TestPbkdf2:
    """pbkdf2_sha256 and the request bounds around it."""

    @pytest.mark.parametrize("vector", _load("pbkdf2-hmac-sha256.json"))
    def test_published_vectors(self, vector):
        """The output matches the published PBKDF2-HMAC-SHA256 vectors (RFC 6070 inputs)."""
        key = pbkdf2_sha256(
            bytes.fromhex(vector["password"]),
            salt=bytes.fromhex(vector["salt"]),
            iterations=vector["iterations"],
            length=vector["length"],
        )
        assert key.hex() == vector["key"]

    def test_defaults(self):
        """0 iterations means 600,000 and 0 length means 32 bytes."""
        assert check_pbkdf2(b"s" * 32, 0) == 600_000
        assert check_length(0) == 32

    @pytest.mark.parametrize("iterations", [9_999, 10_000_001])
    def test_iteration_bounds(self, iterations):
        """Weak and absurd iteration counts are refused, naming the range."""
        with pytest.raises(KdfInputError, match=r"iterations must be 10,000\.\.10,000,000"):
            check_pbkdf2(b"s" * 32, iterations)

    @pytest.mark.parametrize("size", [15, 1025])
    def test_salt_bounds(self, size):
        """Salts must be 16..1024 bytes."""
        with pytest.raises(KdfInputError, match=r"salt must be 16\.\.1024 bytes"):
            check_pbkdf2(b"s" * size, 0)

    @pytest.mark.parametrize("length", [15, 65])
    def test_length_bounds(self, length):
        """Outputs must be 16..64 bytes."""
        with pytest.raises(KdfInputError, match=r"length must be 16\.\.64 bytes"):
            check_length(length)

    def test_zero_iterations_refused_by_the_primitive(self):
        """The primitive itself never runs zero rounds."""
        with pytest.raises(KdfInputError):
            pbkdf2_sha256(b"p", salt=b"s", iterations=0, length=32)
