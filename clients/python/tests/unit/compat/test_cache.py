import threading

import pytest

from keybroker_client.compat import DEKCache, exceptions


class Clock:
    """A settable monotonic clock."""

    def __init__(self):
        """Start at zero."""
        self.now = 0.0

    def __call__(self):
        """The current time."""
        return self.now


@pytest.fixture
def clock():
    """A fresh clock at zero."""
    return Clock()


class TestDEKCache:
    """LRU with a TTL per entry, as the seed documents."""

    def test_defaults(self):
        """100 entries, 300 seconds."""
        cache = DEKCache()

        assert (cache.max_size, cache.ttl_seconds, cache.size) == (100, 300, 0)

    def test_put_then_get(self, clock):
        """A stored DEK comes back; an unknown one is None."""
        cache = DEKCache(clock=clock)
        cache.put("wrapped-1", b"k" * 32)

        assert cache.get("wrapped-1") == b"k" * 32
        assert cache.get("wrapped-2") is None

    def test_entries_expire_after_ttl(self, clock):
        """At ttl_seconds an entry is gone, and the get removes it."""
        cache = DEKCache(ttl_seconds=10, clock=clock)
        cache.put("w", b"k")
        clock.now = 9.9
        assert cache.get("w") == b"k"

        clock.now = 10.0

        assert cache.get("w") is None
        assert cache.size == 0

    def test_expired_entries_stay_until_a_get(self, clock):
        """Cleanup is lazy: size counts an expired entry until get sees it."""
        cache = DEKCache(ttl_seconds=1, clock=clock)
        cache.put("w", b"k")
        clock.now = 5

        assert cache.size == 1

    def test_least_recently_used_is_evicted(self, clock):
        """At max_size, the entry used longest ago goes; get refreshes an entry."""
        cache = DEKCache(max_size=2, clock=clock)
        cache.put("a", b"1")
        cache.put("b", b"2")
        cache.get("a")

        cache.put("c", b"3")

        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", None, b"3")
        assert cache.size == 2

    def test_put_replaces_and_restarts_the_ttl(self, clock):
        """Putting a key again replaces its DEK and its expiry."""
        cache = DEKCache(ttl_seconds=10, clock=clock)
        cache.put("w", b"old")
        clock.now = 8
        cache.put("w", b"new")
        clock.now = 15

        assert cache.get("w") == b"new"
        assert cache.size == 1

    def test_invalidate_and_clear(self, clock):
        """Invalidating drops one entry (absent ones silently); clearing drops all."""
        cache = DEKCache(clock=clock)
        cache.put("a", b"1")
        cache.put("b", b"2")

        cache.invalidate("a")
        cache.invalidate("missing")
        assert (cache.get("a"), cache.size) == (None, 1)
        cache.clear()
        assert cache.size == 0

    def test_evicted_value_is_overwritten(self, clock):
        """The bytearray behind an evicted DEK is zeroed."""
        cache = DEKCache(max_size=1, clock=clock)
        cache.put("a", b"secret")
        stored = cache._entries["a"][1]

        cache.put("b", b"other")

        assert stored == bytearray(6)

    def test_repr_shows_no_values(self, clock):
        """The repr has the settings, never a DEK."""
        cache = DEKCache(clock=clock)
        cache.put("a", b"topsecret")

        assert "topsecret" not in repr(cache)

    @pytest.mark.parametrize(
        "settings",
        [{"max_size": 0}, {"max_size": 1.5}, {"ttl_seconds": 0}, {"ttl_seconds": "5"}],
    )
    def test_bad_settings_are_dek_cache_errors(self, settings):
        """Unusable sizes and TTLs raise DEKCacheError."""
        with pytest.raises(exceptions.DEKCacheError):
            DEKCache(**settings)

    def test_bad_entries_are_dek_cache_errors(self):
        """Keys are the wrapped DEK's text; values are bytes."""
        cache = DEKCache()

        with pytest.raises(exceptions.DEKCacheError):
            cache.put(b"bytes-key", b"k")
        with pytest.raises(exceptions.DEKCacheError):
            cache.put("k", "text value")

    def test_concurrent_puts_respect_max_size(self):
        """Many threads putting at once never grow the cache past max_size."""
        cache = DEKCache(max_size=50)

        def fill(prefix):
            for i in range(200):
                cache.put(f"{prefix}-{i}", b"k")

        threads = [threading.Thread(target=fill, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert cache.size == 50
