import itertools
import sys
import threading

import pytest

from broker.core.aead import DataKey, KeyWipedError
from broker.core.dek_cache import CacheStats, DecryptCache, EncryptSlot, EncryptSlots

_counter = itertools.count(1)


def _key():
    return DataKey.from_dek(next(_counter).to_bytes(32, "big"))


def _wiped(dk):
    return dk._dek == bytearray(32) and dk._content_key == bytearray(32)


@pytest.fixture
def fast_switching():
    """Switch threads very often so that races show up in a short test."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        """Start at an arbitrary, non-zero time."""
        self.now = 1000.0

    def __call__(self):
        """Read the time, like time.monotonic."""
        return self.now


class TestDecryptCache:
    """DecryptCache: unwrapped DEKs by wrapped bytes, LRU and TTL bounded."""

    def test_hit_and_miss(self):
        """A put key is found again; an unknown one is not; both are counted."""
        cache = DecryptCache(max_entries=4, ttl_seconds=60)
        dk = _key()
        assert cache.get(b"w1") is None
        cache.put(b"w1", dk)
        assert cache.get(b"w1") is dk
        assert cache.stats() == CacheStats(hits=1, misses=1, evictions=0)
        assert len(cache) == 1

    def test_least_recently_used_goes_first(self):
        """Looking a key up protects it from the next eviction."""
        cache = DecryptCache(max_entries=2, ttl_seconds=60)
        a, b, c = _key(), _key(), _key()
        cache.put(b"a", a)
        cache.put(b"b", b)
        assert cache.get(b"a") is a
        cache.put(b"c", c)
        assert cache.get(b"b") is None
        assert cache.get(b"a") is a
        assert cache.get(b"c") is c
        assert len(cache) == 2
        assert cache.stats().evictions == 1

    def test_eviction_wipes_the_evicted_key(self):
        """A key pushed out of the cache has its bytes overwritten and cannot be used."""
        cache = DecryptCache(max_entries=1, ttl_seconds=60)
        old, new = _key(), _key()
        cache.put(b"old", old)
        cache.put(b"new", new)
        assert _wiped(old)
        assert not _wiped(new)
        with pytest.raises(KeyWipedError):
            old.seal(bytes(12), b"p", b"")

    def test_entries_expire_after_ttl(self):
        """An entry is served until its TTL ends, then removed and wiped."""
        clock = FakeClock()
        cache = DecryptCache(max_entries=4, ttl_seconds=10, clock=clock)
        dk = _key()
        cache.put(b"w", dk)
        clock.now += 9.999
        assert cache.get(b"w") is dk
        clock.now += 0.001
        assert cache.get(b"w") is None
        assert _wiped(dk)
        assert len(cache) == 0
        assert cache.stats() == CacheStats(hits=1, misses=1, evictions=1)

    def test_lookups_do_not_extend_the_ttl(self):
        """A key in constant use still leaves the cache when its TTL ends."""
        clock = FakeClock()
        cache = DecryptCache(max_entries=4, ttl_seconds=10, clock=clock)
        cache.put(b"w", _key())
        for _ in range(5):
            clock.now += 2
            cache.get(b"w")
        assert cache.get(b"w") is None

    def test_purge_expired(self):
        """Expired entries can be removed without being looked up."""
        clock = FakeClock()
        cache = DecryptCache(max_entries=4, ttl_seconds=10, clock=clock)
        old, fresh = _key(), _key()
        cache.put(b"old", old)
        clock.now += 5
        cache.put(b"fresh", fresh)
        clock.now += 5
        assert cache.purge_expired() == 1
        assert _wiped(old)
        assert cache.get(b"fresh") is fresh

    def test_zero_entries_disables_caching(self):
        """With max_entries=0 nothing is kept, and the caller's key is left usable."""
        cache = DecryptCache(max_entries=0, ttl_seconds=60)
        dk = _key()
        cache.put(b"w", dk)
        assert cache.get(b"w") is None
        assert len(cache) == 0
        assert not _wiped(dk)

    def test_put_replaces_and_wipes_the_old_key(self):
        """Putting a new key under the same wrapped bytes retires the old one."""
        cache = DecryptCache(max_entries=4, ttl_seconds=60)
        old, new = _key(), _key()
        cache.put(b"w", old)
        cache.put(b"w", new)
        cache.put(b"w", new)
        assert cache.get(b"w") is new
        assert _wiped(old)
        assert not _wiped(new)

    def test_clear_wipes_everything(self):
        """clear() empties the cache and overwrites every key."""
        cache = DecryptCache(max_entries=4, ttl_seconds=60)
        keys = [_key() for _ in range(3)]
        for i, dk in enumerate(keys):
            cache.put(bytes([i]), dk)
        cache.clear()
        assert len(cache) == 0
        assert all(_wiped(dk) for dk in keys)

    @pytest.mark.parametrize(
        ("max_entries", "ttl", "message"),
        [
            (-1, 1, "max_entries"),
            (1, 0, "ttl_seconds"),
            (1, -1, "ttl_seconds"),
            (1, float("nan"), "ttl_seconds"),
        ],
    )
    def test_rejects_bad_limits(self, max_entries, ttl, message):
        """Nonsense limits fail at construction, naming the limit."""
        with pytest.raises(ValueError, match=message):
            DecryptCache(max_entries=max_entries, ttl_seconds=ttl)

    @pytest.mark.usefixtures("fast_switching")
    def test_threads_share_one_cache(self):
        """Concurrent gets and puts never exceed the bound or lose count."""
        cache = DecryptCache(max_entries=16, ttl_seconds=60)
        keys = [(bytes([i]), _key()) for i in range(32)]

        def work():
            for i in range(2000):
                wrapped, dk = keys[i % 32]
                if cache.get(wrapped) is None:
                    cache.put(wrapped, dk)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = cache.stats()
        assert stats.hits + stats.misses == 8 * 2000
        assert len(cache) <= 16


class TestDecryptCacheStaleWindow:
    """DecryptCache with stale_seconds: past TTL an entry is a miss, kept for get_stale."""

    def _cache(self, clock, stale=30):
        return DecryptCache(max_entries=4, ttl_seconds=10, clock=clock, stale_seconds=stale)

    def test_past_ttl_is_a_miss_but_kept_for_get_stale(self):
        """After the TTL, get misses yet leaves the key whole; get_stale returns and counts it."""
        clock = FakeClock()
        cache = self._cache(clock)
        dk = _key()
        cache.put(b"w", dk)
        clock.now += 10
        assert cache.get(b"w") is None
        assert not _wiped(dk)
        assert cache.get_stale(b"w") is dk
        assert cache.stats() == CacheStats(hits=0, misses=1, evictions=0, stale=1)

    def test_get_stale_within_ttl_is_a_hit(self):
        """A key still within its TTL (put again by another caller) counts as a hit."""
        cache = self._cache(FakeClock())
        dk = _key()
        cache.put(b"w", dk)
        assert cache.get_stale(b"w") is dk
        assert cache.stats() == CacheStats(hits=1, misses=0, evictions=0, stale=0)

    @pytest.mark.parametrize("lookup", ["get", "get_stale"])
    def test_past_the_window_the_key_is_wiped(self, lookup):
        """At TTL + stale_seconds the entry is gone and its bytes overwritten."""
        clock = FakeClock()
        cache = self._cache(clock)
        dk = _key()
        cache.put(b"w", dk)
        clock.now += 40
        assert getattr(cache, lookup)(b"w") is None
        assert _wiped(dk)
        assert len(cache) == 0
        assert cache.stats().evictions == 1

    def test_zero_window_serves_nothing_stale(self):
        """The default window is 0: past the TTL even get_stale finds nothing, and wipes."""
        clock = FakeClock()
        cache = DecryptCache(max_entries=4, ttl_seconds=10, clock=clock)
        dk = _key()
        cache.put(b"w", dk)
        clock.now += 10
        assert cache.get_stale(b"w") is None
        assert _wiped(dk)

    def test_purge_keeps_entries_within_the_window(self):
        """purge_expired removes only entries past TTL + stale_seconds."""
        clock = FakeClock()
        cache = self._cache(clock)
        old, recent = _key(), _key()
        cache.put(b"old", old)
        clock.now += 25
        cache.put(b"recent", recent)
        clock.now += 15
        assert cache.purge_expired() == 1
        assert _wiped(old)
        assert cache.get_stale(b"recent") is recent

    def test_rejects_a_negative_window(self):
        """A negative stale window is refused, naming it."""
        with pytest.raises(ValueError, match="stale_seconds"):
            DecryptCache(max_entries=1, ttl_seconds=1, stale_seconds=-1)


class TestDecryptCacheTags:
    """DecryptCache.invalidate: entries dropped by tag, the rest left alone."""

    def test_only_matching_tags_are_wiped(self):
        """Invalidating one (key, version) tag wipes its entries and keeps every other."""
        cache = DecryptCache(max_entries=8, ttl_seconds=60)
        keys = {tag: _key() for tag in [("a", 1), ("a", 2), ("b", 1)]}
        for (name, version), dk in keys.items():
            cache.put(f"{name}{version}".encode(), dk, tag=(name, version))
        assert cache.invalidate(lambda tag: tag == ("a", 1)) == 1
        assert _wiped(keys["a", 1])
        assert cache.get(b"a1") is None
        assert cache.get(b"a2") is keys["a", 2]
        assert cache.get(b"b1") is keys["b", 1]


def _slot(clock, version=1):
    return EncryptSlot(data_key=_key(), prefix=b"prefix", key_version=version, created=clock())


class TestEncryptSlots:
    """EncryptSlots: one live DEK per slot, retired by age, messages or bytes."""

    def _slots(self, clock, **limits):
        settings = {"max_age_seconds": 60, "max_messages": 100, "max_bytes": 10_000, **limits}
        return EncryptSlots(**settings, clock=clock)

    def test_miss_then_install_then_hit(self):
        """A slot is reused after install, counting each message and its bytes."""
        clock = FakeClock()
        slots = self._slots(clock)
        assert slots.acquire("k", 10) is None
        slot = _slot(clock)
        slots.install("k", slot, 10)
        assert slots.acquire("k", 5) is slot
        assert (slot.messages, slot.bytes) == (2, 15)
        assert slots.stats() == CacheStats(hits=1, misses=1, evictions=0)
        assert len(slots) == 1

    def test_slot_keys_are_independent(self):
        """Different keys or contexts never share a DEK."""
        clock = FakeClock()
        slots = self._slots(clock)
        one, two = _slot(clock), _slot(clock)
        slots.install(("default", b"ctx1"), one, 1)
        slots.install(("default", b"ctx2"), two, 1)
        assert slots.acquire(("default", b"ctx1"), 1) is one
        assert slots.acquire(("default", b"ctx2"), 1) is two

    def test_age_limit_ends_a_slot(self):
        """A slot is used until max_age has passed since its creation, then wiped."""
        clock = FakeClock()
        slots = self._slots(clock, max_age_seconds=30)
        slot = _slot(clock)
        slots.install("k", slot, 1)
        clock.now += 29.9
        assert slots.acquire("k", 1) is slot
        clock.now += 0.1
        assert slots.acquire("k", 1) is None
        assert _wiped(slot.data_key)
        assert len(slots) == 0
        assert slots.stats().evictions == 1

    def test_message_limit_ends_a_slot(self):
        """A DEK seals at most max_messages messages."""
        clock = FakeClock()
        slots = self._slots(clock, max_messages=3)
        slot = _slot(clock)
        slots.install("k", slot, 1)
        assert slots.acquire("k", 1) is slot
        assert slots.acquire("k", 1) is slot
        assert slots.acquire("k", 1) is None
        assert slot.messages == 3
        assert _wiped(slot.data_key)

    def test_byte_limit_ends_a_slot(self):
        """A DEK seals at most max_bytes bytes; the message that would exceed gets a new DEK."""
        clock = FakeClock()
        slots = self._slots(clock, max_bytes=100)
        slot = _slot(clock)
        slots.install("k", slot, 60)
        assert slots.acquire("k", 40) is slot
        assert slot.bytes == 100
        assert slots.acquire("k", 1) is None
        assert _wiped(slot.data_key)

    def test_limits_are_independent(self):
        """With room left in bytes and age, the message limit alone still ends the slot."""
        clock = FakeClock()
        slots = self._slots(clock, max_messages=1, max_bytes=10**9, max_age_seconds=10**6)
        slots.install("k", _slot(clock), 0)
        assert slots.acquire("k", 0) is None

    def test_install_replaces_and_wipes(self):
        """Installing over a live slot retires the old DEK."""
        clock = FakeClock()
        slots = self._slots(clock)
        old, new = _slot(clock), _slot(clock)
        slots.install("k", old, 1)
        slots.install("k", new, 1)
        assert slots.acquire("k", 1) is new
        assert _wiped(old.data_key)

    def test_oldest_slot_goes_beyond_max_slots(self):
        """The number of live DEKs is bounded; the oldest is retired first."""
        clock = FakeClock()
        slots = self._slots(clock, max_slots=2)
        first, second, third = _slot(clock), _slot(clock), _slot(clock)
        slots.install("a", first, 1)
        slots.install("b", second, 1)
        slots.install("c", third, 1)
        assert len(slots) == 2
        assert slots.acquire("a", 1) is None
        assert _wiped(first.data_key)
        assert slots.acquire("c", 1) is third

    def test_invalidate_after_rotation(self):
        """Slots of a rotated key are removed and wiped; others stay."""
        clock = FakeClock()
        slots = self._slots(clock)
        pay1, pay2, other = _slot(clock), _slot(clock), _slot(clock)
        slots.install(("payments", b"a"), pay1, 1)
        slots.install(("payments", b"b"), pay2, 1)
        slots.install(("default", b"a"), other, 1)
        assert slots.invalidate(lambda key: key[0] == "payments") == 2
        assert _wiped(pay1.data_key)
        assert _wiped(pay2.data_key)
        assert slots.acquire(("default", b"a"), 1) is other
        assert slots.acquire(("payments", b"a"), 1) is None

    def test_clear_wipes_everything(self):
        """clear() retires every live DEK."""
        clock = FakeClock()
        slots = self._slots(clock)
        live = [_slot(clock) for _ in range(3)]
        for i, slot in enumerate(live):
            slots.install(i, slot, 1)
        slots.clear()
        assert len(slots) == 0
        assert all(_wiped(slot.data_key) for slot in live)

    @pytest.mark.parametrize(
        ("limits", "message"),
        [
            ({"max_messages": 0}, "max_messages must be 1..2\\*\\*32"),
            ({"max_messages": 2**32 + 1}, "max_messages must be 1..2\\*\\*32"),
            ({"max_bytes": 0}, "max_bytes must be at least 1"),
            ({"max_age_seconds": 0}, "max_age_seconds must be greater than 0"),
            ({"max_age_seconds": float("nan")}, "max_age_seconds must be greater than 0"),
            ({"max_slots": 0}, "max_slots must be at least 1"),
        ],
    )
    def test_rejects_bad_limits(self, limits, message):
        """Limits outside their bounds fail at construction, naming the bound."""
        with pytest.raises(ValueError, match=message):
            self._slots(FakeClock(), **limits)

    def test_largest_message_limit_is_accepted(self):
        """2**32 messages per DEK is the documented maximum."""
        self._slots(FakeClock(), max_messages=2**32)

    def test_rejects_negative_sizes(self):
        """A message cannot have a negative size."""
        clock = FakeClock()
        slots = self._slots(clock)
        with pytest.raises(ValueError, match="nbytes"):
            slots.acquire("k", -1)
        with pytest.raises(ValueError, match="nbytes"):
            slots.install("k", _slot(clock), -1)

    @pytest.mark.usefixtures("fast_switching")
    def test_threads_never_overuse_a_dek(self):
        """Under concurrency every message is counted once and no DEK exceeds its limits."""
        clock = FakeClock()
        slots = self._slots(clock, max_messages=50, max_bytes=10**9)
        installed, lock, per_thread = [], threading.Lock(), 3000

        def work():
            for _ in range(per_thread):
                if slots.acquire("k", 7) is None:
                    slot = _slot(clock)
                    with lock:
                        installed.append(slot)
                    slots.install("k", slot, 7)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(slot.messages for slot in installed) == 8 * per_thread
        assert sum(slot.bytes for slot in installed) == 7 * 8 * per_thread
        assert all(slot.messages <= 50 for slot in installed)
        assert sum(not _wiped(slot.data_key) for slot in installed) <= 1
