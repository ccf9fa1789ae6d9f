"""DEK caches: fewer KMS calls on both sides, with every retired key overwritten.

* ``DecryptCache``: unwrapped DEKs by wrapped-DEK bytes, least recently used first out, each
  entry living at most ``ttl_seconds`` from when it was put, then kept ``stale_seconds`` more
  (0 by default) for ``get_stale``: a last-known-good answer while the KMS cannot be asked.
  Each entry carries a tag (e.g. key name and version) so ``invalidate`` can drop one key's.
* ``EncryptSlots``: one live DEK per caller-chosen slot (e.g. key name, context, whether the
  context is stored), reused until its age, message count or byte count reaches a limit.

Retired keys are wiped (``DataKey.wipe``), which is best effort in Python. A caller that took a
key out of a cache must use it without yielding to other threads for long: a key retired by
another thread meanwhile raises ``KeyWipedError`` instead of being used.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Hashable

    from broker.core.aead import DataKey

__all__ = [
    "MAX_MESSAGES_PER_DEK",
    "CacheStats",
    "DecryptCache",
    "EncryptSlot",
    "EncryptSlots",
]

MAX_MESSAGES_PER_DEK = 2**32


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of cache counters, for metrics; evictions are removals forced by a limit.

    ``stale`` counts keys handed out by ``DecryptCache.get_stale`` after their TTL.
    """

    hits: int
    misses: int
    evictions: int
    stale: int = 0


@dataclass(slots=True)
class _Entry:
    """One cached key, when its TTL ends, and the tag ``invalidate`` matches on."""

    data_key: DataKey
    expires: float
    tag: Hashable


class DecryptCache:
    """Unwrapped DEKs keyed by their wrapped bytes, so repeat decryptions skip the KMS."""

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        stale_seconds: float = 0.0,
    ) -> None:
        """Hold at most ``max_entries`` keys (0 disables caching), each for ``ttl_seconds``.

        An entry past its TTL stays ``stale_seconds`` more for ``get_stale`` before it is wiped.
        """
        if max_entries < 0:
            raise ValueError("max_entries must be at least 0")
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be greater than 0")
        if not stale_seconds >= 0:
            raise ValueError("stale_seconds must be at least 0")
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._stale = stale_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._stale_served = 0

    def get(self, key: bytes) -> DataKey | None:
        """Return the cached key within its TTL, or None (an entry past any use is wiped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            now = self._clock()
            if now >= entry.expires:
                self._misses += 1
                if now >= entry.expires + self._stale:
                    self._drop(key)
                    self._evictions += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry.data_key

    def get_stale(self, key: bytes) -> DataKey | None:
        """Return the key even past its TTL, within the stale window; for when the KMS is down."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            now = self._clock()
            if now >= entry.expires + self._stale:
                self._drop(key)
                self._evictions += 1
                return None
            self._entries.move_to_end(key)
            if now >= entry.expires:
                self._stale_served += 1
            else:
                self._hits += 1
            return entry.data_key

    def put(self, key: bytes, dk: DataKey, *, tag: Hashable = None) -> None:
        """Cache a freshly unwrapped key, evicting and wiping the least recently used beyond max."""
        if self._max_entries == 0:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None and previous.data_key is not dk:
                previous.data_key.wipe()
            self._entries[key] = _Entry(dk, self._clock() + self._ttl, tag)
            while len(self._entries) > self._max_entries:
                _, evicted = self._entries.popitem(last=False)
                evicted.data_key.wipe()
                self._evictions += 1

    def _drop(self, key: bytes) -> None:
        """Remove and wipe one entry; the caller holds the lock."""
        self._entries.pop(key).data_key.wipe()

    def purge_expired(self) -> int:
        """Remove and wipe every entry past its TTL and stale window, rather than when next used."""
        with self._lock:
            now = self._clock()
            done = [k for k, e in self._entries.items() if now >= e.expires + self._stale]
            for key in done:
                self._drop(key)
            self._evictions += len(done)
            return len(done)

    def invalidate(self, match: Callable[[Hashable], bool]) -> int:
        """Remove and wipe every entry whose tag matches (a key version disabled); how many."""
        with self._lock:
            doomed = [key for key, entry in self._entries.items() if match(entry.tag)]
            for key in doomed:
                self._drop(key)
            return len(doomed)

    def clear(self) -> None:
        """Remove and wipe every entry (shutdown)."""
        self.invalidate(lambda _tag: True)

    def stats(self) -> CacheStats:
        """Return the counters as they are now."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, self._stale_served)

    def __len__(self) -> int:
        """Count the entries held, past-TTL ones included until they are looked up or purged."""
        with self._lock:
            return len(self._entries)


@dataclass(slots=True)
class EncryptSlot:
    """A live DEK, its header prefix, and how much it has sealed so far."""

    data_key: DataKey
    prefix: builtins.bytes
    key_version: int
    created: float
    messages: int = 0
    bytes: int = 0


class EncryptSlots:
    """One live DEK per slot key, reused until a limit ends it, so most encryptions skip the KMS."""

    def __init__(
        self,
        max_age_seconds: float,
        max_messages: int,
        max_bytes: int,
        max_slots: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check the limits; ``max_messages`` is capped by the 96-bit random nonce bound."""
        if not max_age_seconds > 0:
            raise ValueError("max_age_seconds must be greater than 0")
        if not 1 <= max_messages <= MAX_MESSAGES_PER_DEK:
            raise ValueError("max_messages must be 1..2**32")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if max_slots < 1:
            raise ValueError("max_slots must be at least 1")
        self._max_age = max_age_seconds
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._max_slots = max_slots
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: OrderedDict[Hashable, EncryptSlot] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def _fits(self, slot: EncryptSlot, nbytes: int) -> bool:
        """Tell whether one more message of ``nbytes`` keeps the slot within every limit."""
        return (
            slot.created + self._max_age > self._clock()
            and slot.messages < self._max_messages
            and slot.bytes + nbytes <= self._max_bytes
        )

    def acquire(self, slot_key: Hashable, nbytes: int) -> EncryptSlot | None:
        """Count one message of ``nbytes`` against the live slot and return it; None on a miss."""
        if nbytes < 0:
            raise ValueError("nbytes must be at least 0")
        with self._lock:
            slot = self._slots.get(slot_key)
            if slot is None:
                self._misses += 1
                return None
            if not self._fits(slot, nbytes):
                del self._slots[slot_key]
                slot.data_key.wipe()
                self._evictions += 1
                self._misses += 1
                return None
            slot.messages += 1
            slot.bytes += nbytes
            self._hits += 1
            return slot

    def install(self, slot_key: Hashable, slot: EncryptSlot, nbytes: int) -> None:
        """Make ``slot`` the live slot, counting its first message; the one it replaces is wiped."""
        if nbytes < 0:
            raise ValueError("nbytes must be at least 0")
        with self._lock:
            previous = self._slots.pop(slot_key, None)
            if previous is not None and previous.data_key is not slot.data_key:
                previous.data_key.wipe()
            slot.messages += 1
            slot.bytes += nbytes
            self._slots[slot_key] = slot
            while len(self._slots) > self._max_slots:
                _, evicted = self._slots.popitem(last=False)
                evicted.data_key.wipe()
                self._evictions += 1

    def invalidate(self, match: Callable[[Hashable], bool]) -> int:
        """Remove and wipe every slot whose key matches (after a rotation); return how many."""
        with self._lock:
            doomed = [slot_key for slot_key in self._slots if match(slot_key)]
            for slot_key in doomed:
                self._slots.pop(slot_key).data_key.wipe()
            return len(doomed)

    def clear(self) -> None:
        """Remove and wipe every slot (shutdown)."""
        self.invalidate(lambda _slot_key: True)

    def stats(self) -> CacheStats:
        """Return the counters as they are now."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions)

    def __len__(self) -> int:
        """Count the live slots."""
        with self._lock:
            return len(self._slots)
