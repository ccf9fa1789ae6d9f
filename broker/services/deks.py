"""DEKs for encryption and decryption: the DEK cache in front of the KMS, with single-flight.

Encrypt side: one live DEK per (key, context, store flag) reused within the configured
age/message/byte limits. Decrypt side: LRU+TTL of unwrapped DEKs keyed by the wrapped DEK,
tagged with their key name and version so that a version change drops only that key's.
Concurrent misses for the same slot or wrapped DEK make one KMS call. A cached DataKey is
used synchronously right after it is fetched (never across an await), because eviction wipes it.

With `decrypt_stale_seconds` set, a DEK past its TTL still opens envelopes for that long, but
only when the KMS answered the refresh with `KmsUnavailableError` (down, timed out, circuit
open): never in place of an answer such as not-found, invalid ciphertext or a disabled version.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from broker.core.aead import DataKey
from broker.core.dek_cache import DecryptCache, EncryptSlot, EncryptSlots
from broker.core.wire import FORMAT_V1, encode_prefix
from broker.errors import KmsUnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Mapping

    from broker.core.wire import Header
    from broker.services.keys import ResolvedKey

__all__ = ["DekLimits", "DekProvider", "DekStats", "FreshKey"]

log = structlog.get_logger("keybroker")


@dataclass(frozen=True, slots=True, kw_only=True)
class DekLimits:
    """Cache limits; `enabled=False` makes every operation call the KMS.

    `decrypt_stale_seconds` (0 = off) keeps a decrypt-side DEK that long past its TTL, to
    serve only while its KMS is unavailable.
    """

    enabled: bool = True
    decrypt_max_entries: int = 10_000
    decrypt_ttl_seconds: float = 300.0
    decrypt_stale_seconds: float = 0.0
    encrypt_max_age_seconds: float = 300.0
    encrypt_max_messages: int = 1 << 20
    encrypt_max_bytes: int = 1 << 34


@dataclass(frozen=True, slots=True)
class DekStats:
    """Counter snapshot for metrics; `decrypt_stale` counts DEKs served past TTL in an outage."""

    encrypt_hits: int
    encrypt_misses: int
    decrypt_hits: int
    decrypt_misses: int
    decrypt_stale: int
    kms_generate_calls: int
    kms_unwrap_calls: int


@dataclass(frozen=True, slots=True)
class FreshKey:
    """A DEK just made by the KMS: one DataKey to use, a twin to cache, the header prefix."""

    data_key: DataKey
    twin: DataKey
    prefix: bytes
    key_version: int
    wrapped: bytes


class _SingleFlight:
    """At most one in-flight call per key; followers wait for the leader's outcome."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future[None]] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[None]]) -> bool:
        """Run call as leader and return True, or wait for the leader and return False."""
        pending = self._calls.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        try:
            await call()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers re-raise it themselves
            raise
        else:
            future.set_result(None)
        finally:
            del self._calls[key]
        return True


class DekProvider:
    """Hands out DataKeys for sealing and opening, calling the KMS only on cache misses."""

    def __init__(self, limits: DekLimits, clock: Callable[[], float] = time.monotonic) -> None:
        """Build both caches with the configured limits."""
        self._limits = limits
        entries = limits.decrypt_max_entries if limits.enabled else 0
        self._decrypt = DecryptCache(
            entries,
            limits.decrypt_ttl_seconds,
            clock=clock,
            stale_seconds=limits.decrypt_stale_seconds,
        )
        self._slots = EncryptSlots(
            limits.encrypt_max_age_seconds,
            limits.encrypt_max_messages,
            limits.encrypt_max_bytes,
            clock=clock,
        )
        self._clock = clock
        self._enc_flight = _SingleFlight()
        self._dec_flight = _SingleFlight()
        self._generate_calls = 0
        self._unwrap_calls = 0
        self._enc_hits = 0
        self._enc_misses = 0
        self._outages: dict[str, int] = {}  # backend scheme -> stale serves since it went down

    async def fresh(
        self, key: ResolvedKey, context: Mapping[str, str], stored: bytes | None, version: int
    ) -> FreshKey:
        """A new DEK from the KMS (not cached), as a DataKey, its twin and a header prefix."""
        self._generate_calls += 1
        generated = await key.backend.generate_data_key(key.key_id, context)
        self._answered(key)
        try:
            dk, twin = DataKey.from_dek(generated.plaintext), DataKey.from_dek(generated.plaintext)
        finally:
            generated.wipe()
        prefix = encode_prefix(
            version=version,
            key_name=key.name,
            key_version=generated.key_version,
            wrapped_dek=generated.wrapped,
            commitment=dk.commitment,
            stored_context=stored,
        )
        return FreshKey(dk, twin, prefix, generated.key_version, generated.wrapped)

    async def for_encrypt(
        self,
        key: ResolvedKey,
        context: Mapping[str, str],
        canonical: bytes,
        *,
        store: bool,
        nbytes: int,
    ) -> EncryptSlot:
        """A live slot with this message already counted; use it before the next await."""
        stored = canonical if store else None
        if not self._limits.enabled:
            new = await self.fresh(key, context, stored, FORMAT_V1)
            new.twin.wipe()
            return EncryptSlot(new.data_key, new.prefix, new.key_version, self._clock(), 1, nbytes)
        slot_key = (key.name, canonical, store)
        while True:
            slot = self._slots.acquire(slot_key, nbytes)
            if slot is not None:
                self._enc_hits += 1
                return slot
            installed: list[EncryptSlot] = []

            async def install() -> None:
                new = await self.fresh(key, context, stored, FORMAT_V1)
                cache_key = _cache_key(key.name, new.key_version, new.wrapped)
                self._decrypt.put(cache_key, new.twin, tag=(key.name, new.key_version))
                slot = EncryptSlot(new.data_key, new.prefix, new.key_version, self._clock())
                self._slots.install(slot_key, slot, nbytes)
                installed.append(slot)  # noqa: B023 - awaited within this iteration

            self._enc_misses += 1
            if await self._enc_flight.run(slot_key, install):
                return installed[0]

    async def for_decrypt(
        self, key: ResolvedKey, header: Header, context: Mapping[str, str]
    ) -> DataKey:
        """The DataKey that opens this header's wrapped DEK; use it before the next await.

        Past its TTL a cached DEK is unwrapped again; only if the KMS is unavailable does the
        stale entry serve (within `decrypt_stale_seconds`), otherwise the error stands.
        """
        cache_key = _cache_key(key.name, header.key_version, header.wrapped_dek)
        dk = self._decrypt.get(cache_key)
        if dk is not None:
            return dk
        try:
            return await self._load(key, header, context, cache_key)
        except KmsUnavailableError:
            stale = self._decrypt.get_stale(cache_key)
            if stale is None:
                raise
            self._served_stale(key)
            return stale

    async def _load(
        self, key: ResolvedKey, header: Header, context: Mapping[str, str], cache_key: bytes
    ) -> DataKey:
        """Unwrap once for every concurrent miss of this wrapped DEK, caching the result."""
        loaded: list[DataKey] = []

        async def load() -> None:
            dk, twin = await self._unwrap(key, header, context)
            self._decrypt.put(cache_key, twin, tag=(key.name, header.key_version))
            loaded.append(dk)

        if await self._dec_flight.run(cache_key, load):
            return loaded[0]
        dk = self._decrypt.get(cache_key)
        if dk is not None:
            return dk
        dk, twin = await self._unwrap(key, header, context)
        twin.wipe()
        return dk

    async def _unwrap(
        self, key: ResolvedKey, header: Header, context: Mapping[str, str]
    ) -> tuple[DataKey, DataKey]:
        self._unwrap_calls += 1
        dek = await key.backend.unwrap(key.key_id, header.key_version, header.wrapped_dek, context)
        self._answered(key)
        try:
            return DataKey.from_dek(dek), DataKey.from_dek(dek)
        finally:
            dek[:] = bytes(len(dek))

    def _served_stale(self, key: ResolvedKey) -> None:
        """Note a stale serve; the first of an outage of this backend is logged as a warning."""
        scheme = key.backend.scheme
        if scheme not in self._outages:
            log.warning(
                "dek_cache_serving_stale",
                key=key.name,
                backend=scheme,
                stale_seconds=self._limits.decrypt_stale_seconds,
            )
            self._outages[scheme] = 0
        self._outages[scheme] += 1

    def _answered(self, key: ResolvedKey) -> None:
        """The key's KMS answered: end its outage, if one was serving stale DEKs."""
        served = self._outages.pop(key.backend.scheme, None)
        if served is not None:
            log.info("dek_cache_stale_ended", backend=key.backend.scheme, stale_served=served)

    def invalidate(
        self, key_name: str, *, decrypt_too: bool = False, version: int | None = None
    ) -> None:
        """Forget a key's encrypt slots (after rotation); with decrypt_too, its cached DEKs too.

        Only that key's decrypt-side DEKs go, and only those of `version` when one is named, so
        disabling one version leaves every other key's cache warm.
        """
        self._slots.invalidate(
            lambda slot_key: isinstance(slot_key, tuple) and slot_key[0] == key_name
        )
        if decrypt_too:
            self._decrypt.invalidate(_of_key(key_name, version))

    def stats(self) -> DekStats:
        """Counters for metrics and tests."""
        dec = self._decrypt.stats()
        return DekStats(
            encrypt_hits=self._enc_hits,
            encrypt_misses=self._enc_misses,
            decrypt_hits=dec.hits,
            decrypt_misses=dec.misses,
            decrypt_stale=dec.stale,
            kms_generate_calls=self._generate_calls,
            kms_unwrap_calls=self._unwrap_calls,
        )


def _of_key(key_name: str, version: int | None) -> Callable[[Hashable], bool]:
    """Match decrypt-cache tags (key name, version) of one key, or of one of its versions."""

    def match(tag: Hashable) -> bool:
        return (
            isinstance(tag, tuple) and tag[0] == key_name and (version is None or tag[1] == version)
        )

    return match


def _cache_key(name: str, version: int, wrapped: bytes) -> bytes:
    encoded = name.encode()
    return struct.pack(">B", len(encoded)) + encoded + struct.pack(">I", version) + wrapped
