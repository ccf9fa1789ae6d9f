"""Multi-wrap: one DEK wrapped under several backend keys, for disaster recovery.

The wrapped DEK stored in the envelope header becomes a list, one entry per member key, in
configuration order: `u8 count`, then `count` times `u32 key version ‖ u16 length ‖ wrapped bytes`.
Unwrap tries the members in order and moves on only when a member is unreachable or has lost
the key; a member that rejects its entry as invalid ends the attempt (the envelope was altered).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from broker.errors import (
    KmsAuthenticationError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
)
from broker.kms.base import GeneratedKey, WrappedKey

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from broker.kms.base import BackendKey, KeyVersionInfo, KmsBackend

__all__ = ["MAX_MEMBERS", "MultiWrapBackend", "decode_entries", "encode_entries"]

MAX_MEMBERS = 4
_FALL_THROUGH = (KmsUnavailableError, KmsKeyNotFoundError, KmsAuthenticationError)


def encode_entries(entries: Sequence[tuple[int, bytes]]) -> bytes:
    """Serialize (key version, wrapped DEK) entries."""
    out = bytearray(struct.pack(">B", len(entries)))
    for version, wrapped in entries:
        out += struct.pack(">IH", version, len(wrapped)) + wrapped
    return bytes(out)


def decode_entries(data: bytes, expected: int) -> list[tuple[int, bytes]]:
    """Parse entries, checking every length first; KmsInvalidCiphertextError when malformed."""
    if not data or data[0] != expected:
        raise KmsInvalidCiphertextError
    entries, offset = [], 1
    for _ in range(expected):
        if offset + 6 > len(data):
            raise KmsInvalidCiphertextError
        version, length = struct.unpack_from(">IH", data, offset)
        offset += 6
        if length == 0 or offset + length > len(data):
            raise KmsInvalidCiphertextError
        entries.append((version, data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise KmsInvalidCiphertextError
    return entries


class MultiWrapBackend:
    """A KmsBackend over ordered member keys; the first is primary for versions and rotation."""

    scheme = "multi"

    def __init__(self, members: Sequence[tuple[KmsBackend, str]]) -> None:
        """Members are (backend, backend key id) pairs, primary first."""
        if not 2 <= len(members) <= MAX_MEMBERS:  # noqa: PLR2004 - a primary and at least one more
            msg = f"multi-wrap needs 2..{MAX_MEMBERS} keys"
            raise ValueError(msg)
        self._members = list(members)

    async def _wrap_rest(
        self, dek: bytes, first: tuple[int, bytes], context: Mapping[str, str]
    ) -> bytes:
        entries = [first]
        for backend, key_id in self._members[1:]:
            wrapped = await backend.wrap(key_id, dek, context)
            entries.append((wrapped.key_version, wrapped.wrapped))
        return encode_entries(entries)

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """The primary makes the DEK; every other member wraps the same DEK."""
        del key_id
        primary, primary_id = self._members[0]
        generated = await primary.generate_data_key(primary_id, context)
        try:
            first = (generated.key_version, generated.wrapped)
            wrapped = await self._wrap_rest(bytes(generated.plaintext), first, context)
        except BaseException:
            generated.wipe()
            raise
        return GeneratedKey(generated.plaintext, wrapped, generated.key_version)

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Wrap under every member."""
        del key_id
        primary, primary_id = self._members[0]
        first = await primary.wrap(primary_id, dek, context)
        wrapped = await self._wrap_rest(dek, (first.key_version, first.wrapped), context)
        return WrappedKey(wrapped, first.key_version)

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Try members in order, moving on only when one is unreachable or lost its key."""
        del key_id, key_version
        entries = decode_entries(wrapped, len(self._members))
        failures: list[Exception] = []
        for (backend, member_id), (version, entry) in zip(self._members, entries, strict=True):
            try:
                return await backend.unwrap(member_id, version, entry, context)
            except _FALL_THROUGH as exc:
                failures.append(exc)
        raise failures[-1]

    async def describe_key(self, key_id: str) -> BackendKey:
        """The primary key's description."""
        del key_id
        backend, primary_id = self._members[0]
        return await backend.describe_key(primary_id)

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Rotate the primary (the others are recovery keys, rotated where they live)."""
        del key_id
        backend, primary_id = self._members[0]
        return await backend.rotate_key(primary_id)

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Applies to the primary."""
        del key_id
        backend, primary_id = self._members[0]
        return await backend.set_version_state(primary_id, version, enabled=enabled)

    async def health(self) -> None:
        """Healthy when the primary is."""
        await self._members[0][0].health()

    async def close(self) -> None:
        """Members are shared backends, closed by their owner."""
