"""Hashing use cases: SHA-256 digests, HMAC-SHA256 under broker keys, and blind indexes.

A MAC or digest that does not match is VerificationFailedError, never a false result; every
comparison is constant-time. HMACs use the key's current version and verification tries one
version or every enabled one. Blind indexes (core/macs.py) use the current version; the
version is returned so callers can re-index after a rotation. Digests need no key and are
authorized as the keyless `hash_password` operation.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.core import macs
from broker.errors import InvalidRequestError, VerificationFailedError, WrongKeyPurposeError
from broker.kms.base import MacBackend

if TYPE_CHECKING:
    from collections.abc import Sequence

    from broker.errors import BrokerError
    from broker.policy.authorizer import Caller
    from broker.services.keys import ResolvedKey
    from broker.services.operations import Operations

__all__ = [
    "Digest",
    "HashingService",
    "Index",
    "IndexItem",
    "Mac",
    "MacItem",
    "MacVerified",
]

_HMAC = ("hmac",)
_SHA256_SIZE = 32


@dataclass(frozen=True, slots=True)
class Digest:
    """A SHA-256 digest."""

    digest: bytes

    @property
    def hex(self) -> str:
        """Lowercase hex, the seed's hash_data form."""
        return self.digest.hex()


@dataclass(frozen=True, slots=True)
class MacItem:
    """Data to MAC, or (with `mac`) to check; version 0 tries every enabled version."""

    key: str
    data: bytes
    mac: bytes = b""
    key_version: int = 0


@dataclass(frozen=True, slots=True)
class Mac:
    """A MAC and the key version that made it."""

    mac: bytes
    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class MacVerified:
    """A matching MAC's key and version."""

    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class IndexItem:
    """A field value to index; length 0 means 32 bytes."""

    key: str
    field: str
    tenant: str
    value: bytes
    length: int = 0


@dataclass(frozen=True, slots=True)
class Index:
    """A blind index and the key version that made it."""

    index: bytes
    key: str
    key_version: int


def _macer(key: ResolvedKey) -> MacBackend:
    if not isinstance(key.backend, MacBackend):
        raise WrongKeyPurposeError("this key's backend cannot compute HMACs")
    return key.backend


def _expected_digest(digest: bytes | None, hex_digest: str | None) -> bytes:
    if hex_digest is not None:
        if len(hex_digest) != 2 * _SHA256_SIZE:
            raise InvalidRequestError("hex must be 64 hexadecimal characters (SHA-256)")
        try:
            return bytes.fromhex(hex_digest)
        except ValueError:
            raise InvalidRequestError("hex must be 64 hexadecimal characters (SHA-256)") from None
    if digest is None or len(digest) != _SHA256_SIZE:
        raise InvalidRequestError("digest must be 32 bytes (SHA-256), or give hex")
    return digest


class HashingService:
    """Digests, HMACs and blind indexes for authorized callers."""

    def __init__(self, ops: Operations) -> None:
        """Use the shared authorization, lookup, bounds and batch plumbing."""
        self._ops = ops

    def digest(self, caller: Caller, items: Sequence[bytes]) -> list[Digest]:
        """SHA-256 of each item; an oversize item fails the whole request (no item errors)."""
        self._ops.check_batch(len(items))
        for data in items:
            self._ops.check_data(data)
        self._ops.authorize(caller, "hash_password")
        return [Digest(hashlib.sha256(data).digest()) for data in items]

    def verify_digest(
        self, caller: Caller, data: bytes, *, digest: bytes | None, hex_digest: str | None
    ) -> None:
        """Return only when SHA-256(data) equals the expected digest (constant-time)."""
        expected = _expected_digest(digest, hex_digest)
        (actual,) = self.digest(caller, [data])
        if not hmac.compare_digest(actual.digest, expected):
            raise VerificationFailedError

    async def hmac(self, caller: Caller, items: Sequence[MacItem]) -> list[Mac | BrokerError]:
        """HMAC-SHA256 of each item under its key's current version."""
        return await self._ops.batch("hmac", items, lambda i: self._mac_one(caller, i))

    async def _mac_one(self, caller: Caller, item: MacItem) -> Mac:
        self._ops.check_data(item.data)
        key = self._ops.key(caller, item.key, "hmac", _HMAC)
        result = await _macer(key).mac(key.key_id, item.data)
        return Mac(result.mac, key.name, result.key_version)

    async def verify_hmac(self, caller: Caller, item: MacItem) -> MacVerified:
        """Return only when the MAC matches; VerificationFailedError otherwise."""
        return await self._ops.audited("hmac_verify", self._verify_one(caller, item))

    async def _verify_one(self, caller: Caller, item: MacItem) -> MacVerified:
        self._ops.check_data(item.data)
        key = self._ops.key(caller, item.key, "hmac", _HMAC)
        version = await _macer(key).verify_mac(key.key_id, item.key_version, item.data, item.mac)
        return MacVerified(key.name, version)

    async def blind_index(
        self, caller: Caller, items: Sequence[IndexItem]
    ) -> list[Index | BrokerError]:
        """A deterministic index per value, under a key derived for its field and tenant."""
        return await self._ops.batch("blind_index", items, lambda i: self._index_one(caller, i))

    async def _index_one(self, caller: Caller, item: IndexItem) -> Index:
        self._ops.check_data(item.value, "value")
        length = item.length or macs.MAC_SIZE
        lo, hi = macs.BLIND_INDEX_LENGTHS
        if not lo <= length <= hi:
            raise InvalidRequestError(f"length must be {lo}..{hi} bytes (0 means {hi})")
        try:
            label = macs.blind_index_label(item.field, item.tenant)
        except macs.MacInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        scope = {"field": item.field, "tenant": item.tenant}
        key = self._ops.key(caller, item.key, "hmac", _HMAC, scope)
        result = await _macer(key).derived_mac(key.key_id, label, item.value, length)
        return Index(result.mac, key.name, result.key_version)
