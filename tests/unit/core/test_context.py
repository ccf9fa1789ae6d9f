import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.context import (
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_KEY_BYTES,
    MAX_CONTEXT_PAIRS,
    MAX_CONTEXT_VALUE_BYTES,
    ContextError,
    canonical_context,
    parse_canonical_context,
)

_texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
_contexts = st.dictionaries(
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12),
    _texts,
    max_size=8,
)


def _pair(key: bytes, value: bytes) -> bytes:
    return len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value


def _encoding(*pairs: tuple[bytes, bytes]) -> bytes:
    return len(pairs).to_bytes(2, "big") + b"".join(_pair(k, v) for k, v in pairs)


class TestCanonicalContext:
    """canonical_context: the bytes a context authenticates as."""

    def test_empty_context_is_two_zero_bytes(self):
        """An absent context and an empty one authenticate identically."""
        assert canonical_context({}) == b"\x00\x00"

    def test_known_encoding(self):
        """The layout is count, then length-prefixed key and value per pair."""
        assert canonical_context({"tenant": "acme", "env": ""}) == (
            b"\x00\x02" + b"\x00\x03env\x00\x00" + b"\x00\x06tenant\x00\x04acme"
        )

    def test_order_of_insertion_does_not_matter(self):
        """Two dicts with the same pairs encode to the same bytes."""
        one = {"b": "2", "a": "1", "é": "3", "z": "4"}
        other = dict(reversed(list(one.items())))
        assert canonical_context(one) == canonical_context(other)

    def test_sorted_by_utf8_bytes(self):
        """Keys are ordered by their UTF-8 bytes, so non-ASCII keys sort after ASCII ones."""
        encoded = canonical_context({"é": "", "z": "", "A": ""})
        assert encoded == _encoding((b"A", b""), (b"z", b""), ("é".encode(), b""))

    def test_bounds_at_the_limit_are_accepted(self):
        """The largest key, value and pair count allowed all encode."""
        canonical_context({"k" * MAX_CONTEXT_KEY_BYTES: "v" * MAX_CONTEXT_VALUE_BYTES})
        canonical_context({"é" * (MAX_CONTEXT_KEY_BYTES // 2): ""})
        canonical_context({f"k{i}": "" for i in range(MAX_CONTEXT_PAIRS)})

    @pytest.mark.parametrize(
        ("context", "message"),
        [
            ({f"k{i}": "" for i in range(65)}, "encryption context has more than 64 pairs"),
            ({"": "v"}, "encryption context key must be 1..256 bytes of UTF-8"),
            ({"k" * 257: "v"}, "encryption context key must be 1..256 bytes of UTF-8"),
            ({"é" * 129: "v"}, "encryption context key must be 1..256 bytes of UTF-8"),
            ({"\ud800": "v"}, "encryption context key must be 1..256 bytes of UTF-8"),
            ({"k": "v" * 2049}, "encryption context value must be at most 2048 bytes of UTF-8"),
            ({"k": "\udfff"}, "encryption context value must be at most 2048 bytes of UTF-8"),
            ({"k": 1}, "encryption context keys and values must be strings"),
            ({2: "v"}, "encryption context keys and values must be strings"),
            (
                {f"k{i}": "v" * 2048 for i in range(4)},
                "encryption context encoding is longer than 8192 bytes",
            ),
        ],
    )
    def test_bounds_violations_name_the_bound(self, context, message):
        """Each violated bound is reported by a message naming it."""
        with pytest.raises(ContextError) as caught:
            canonical_context(context)
        assert str(caught.value) == message

    def test_message_never_echoes_values(self):
        """A rejected context's keys and values stay out of the error message."""
        with pytest.raises(ContextError) as caught:
            canonical_context({"secret-key": "secret-value" * 200})
        assert "secret" not in str(caught.value)

    def test_errors_are_value_errors(self):
        """Callers that catch ValueError for bad input also catch context errors."""
        assert issubclass(ContextError, ValueError)

    def test_largest_encoding_fits(self):
        """Three full pairs fit within the 8192-byte bound."""
        encoded = canonical_context({f"k{i}": "v" * 2048 for i in range(3)})
        assert len(encoded) <= MAX_CONTEXT_BYTES


class TestParseCanonicalContext:
    """parse_canonical_context: the strict inverse of canonical_context."""

    @settings(max_examples=200)
    @given(_contexts)
    def test_round_trip(self, context):
        """Any valid context survives encoding and decoding unchanged."""
        assert parse_canonical_context(canonical_context(context)) == context

    def test_empty(self):
        """The empty encoding decodes to an empty dict."""
        assert parse_canonical_context(b"\x00\x00") == {}

    def test_every_truncation_is_rejected(self):
        """No strict prefix of an encoding decodes."""
        encoded = canonical_context({"a": "1", "bb": "22"})
        for end in range(len(encoded)):
            with pytest.raises(ContextError):
                parse_canonical_context(encoded[:end])

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (_encoding((b"b", b""), (b"a", b"")), "sorted by their UTF-8 bytes and unique"),
            (_encoding((b"a", b"1"), (b"a", b"2")), "sorted by their UTF-8 bytes and unique"),
            (_encoding((b"a", b"")) + b"\x00", "trailing bytes"),
            (_encoding((b"", b"v")), "key must be 1..256 bytes"),
            (_encoding((b"k" * 257, b"v")), "key must be 1..256 bytes"),
            (_encoding((b"k", b"v" * 2049)), "value must be at most 2048 bytes"),
            (_encoding((b"\xff", b"v")), "key must be 1..256 bytes of UTF-8"),
            (_encoding((b"k", b"\xc3")), "value must be at most 2048 bytes of UTF-8"),
            (_encoding((b"k", b"\xed\xa0\x80")), "value must be at most 2048 bytes of UTF-8"),
            (b"\x00\x41" + b"\x00\x01k\x00\x00" * 65, "more than 64 pairs"),
            (b"\x00", "truncated"),
            (b"", "truncated"),
            (b"\x00\x00" + b"\x00" * 8191, "longer than 8192 bytes"),
        ],
    )
    def test_rejects_non_canonical(self, data, message):
        """Only bytes canonical_context could have produced are accepted."""
        with pytest.raises(ContextError, match=message):
            parse_canonical_context(data)

    def test_accepts_bytes_like(self):
        """A bytearray or memoryview decodes like bytes."""
        encoded = canonical_context({"a": "b"})
        assert parse_canonical_context(bytearray(encoded)) == {"a": "b"}
        assert parse_canonical_context(memoryview(encoded)) == {"a": "b"}
