"""Multi-wrap entries: strict parsing, and which member failures fall through."""

# ruff: noqa: D102, D107, ARG002 - FakeMember implements the whole KmsBackend protocol

from __future__ import annotations

import pytest

from broker.errors import KmsInvalidCiphertextError, KmsUnavailableError
from broker.kms.base import BackendKey, GeneratedKey, KeyVersionInfo, WrappedKey
from broker.kms.multiwrap import MultiWrapBackend, decode_entries, encode_entries


class FakeMember:
    """A member backend whose unwrap outcome the test chooses."""

    scheme = "fake"

    def __init__(self, name: bytes, failure: Exception | None = None) -> None:
        self.name, self.failure, self.unwraps = name, failure, 0

    async def generate_data_key(self, key_id, context):
        return GeneratedKey(bytearray(b"k" * 32), self.name, 1)

    async def wrap(self, key_id, dek, context):
        return WrappedKey(self.name, 7)

    async def unwrap(self, key_id, key_version, wrapped, context):
        self.unwraps += 1
        if self.failure:
            raise self.failure
        return bytearray(b"k" * 32)

    async def describe_key(self, key_id):
        return BackendKey(key_id, 1, (KeyVersionInfo(1),))

    async def rotate_key(self, key_id):
        return await self.describe_key(key_id)

    async def set_version_state(self, key_id, version, *, enabled):
        return KeyVersionInfo(version)

    async def health(self):
        return None

    async def close(self):
        return None


class TestEntries:
    """The wrapped-DEK list format."""

    def test_round_trip(self):
        """Entries encode and decode unchanged."""
        entries = [(1, b"abc"), (0, b"x" * 300)]
        assert decode_entries(encode_entries(entries), 2) == entries

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\x03",
            b"\x01\x00\x00\x00\x01\x00\x01a",
            b"\x02\x00\x00\x00\x01\x00\x03ab",
            b"\x02" + b"\x00" * 6,
            encode_entries([(1, b"a"), (2, b"b")]) + b"z",
        ],
        ids=["empty", "count-3", "count-1", "short-entry", "zero-length", "trailing"],
    )
    def test_malformed(self, data):
        """Wrong counts, zero or overlong lengths and trailing bytes are invalid ciphertext."""
        with pytest.raises(KmsInvalidCiphertextError):
            decode_entries(data, 2)


class TestFallThrough:
    """Which member errors let the next member try."""

    async def test_unavailable_primary_falls_through(self):
        """An unreachable primary is skipped and the secondary unwraps."""
        primary, secondary = FakeMember(b"p", KmsUnavailableError()), FakeMember(b"s")
        multi = MultiWrapBackend([(primary, "a"), (secondary, "b")])
        generated = await multi.generate_data_key("k", {})
        assert await multi.unwrap("k", 1, generated.wrapped, {}) == bytearray(b"k" * 32)
        assert (primary.unwraps, secondary.unwraps) == (1, 1)

    async def test_invalid_entry_does_not_fall_through(self):
        """A member that rejects its entry ends the attempt: the envelope was altered."""
        primary, secondary = FakeMember(b"p", KmsInvalidCiphertextError()), FakeMember(b"s")
        multi = MultiWrapBackend([(primary, "a"), (secondary, "b")])
        wrapped = (await multi.wrap("k", b"k" * 32, {})).wrapped
        with pytest.raises(KmsInvalidCiphertextError):
            await multi.unwrap("k", 7, wrapped, {})
        assert secondary.unwraps == 0
