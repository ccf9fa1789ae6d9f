"""The seed's ``DEKCache``: an in-memory LRU + TTL cache of unwrapped DEKs, keyed by wrapped DEK.

Used by ``EnvelopeEncryptor`` for envelopes it opens in this process (seed-format envelopes
whose DEK was wrapped by a caller-held master key or a custom backend). Envelopes in the
broker's format are opened in the broker, which keeps its own DEK cache
(``ECL_CRYPTO_DEK_CACHE_*`` configure it there).

Entries expire ``ttl_seconds`` after they were stored and are dropped lazily on ``get``; at
``max_size`` the least recently used entry is evicted. Every operation holds one lock.
Entries are kept as ``bytearray`` and overwritten when they leave the cache (best effort:
Python may hold other copies). Values are never logged.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from keybroker_client._convert import check_bytes

from .exceptions import DEKCacheError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEKCache"]


def _wipe(buffer: bytearray) -> None:
    """Overwrite a DEK leaving the cache."""
    buffer[:] = bytes(len(buffer))


class DEKCache:
    """Thread-safe LRU cache of plaintext DEKs with a per-entry time to live."""

    def __init__(
        self,
        max_size: int = 100,
        ttl_seconds: int = 300,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bound the cache by entry count and age; ``clock`` is injectable for tests."""
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise DEKCacheError(f"max_size must be an int of at least 1, got {max_size!r}")
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)):
            raise DEKCacheError(f"ttl_seconds must be a number, got {ttl_seconds!r}")
        if ttl_seconds <= 0:
            raise DEKCacheError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, bytearray]] = OrderedDict()

    @staticmethod
    def _key(encrypted_dek: object) -> str:
        """Entries are keyed by the wrapped DEK's text form."""
        if not isinstance(encrypted_dek, str):
            raise DEKCacheError(f"encrypted_dek must be str, not {type(encrypted_dek).__name__}")
        return encrypted_dek

    def get(self, encrypted_dek: str) -> bytes | None:
        """The cached DEK (now most recently used), or None when absent or expired."""
        key = self._key(encrypted_dek)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            expires, dek = found
            if self._clock() >= expires:
                del self._entries[key]
                _wipe(dek)
                return None
            self._entries.move_to_end(key)
            return bytes(dek)

    def put(self, encrypted_dek: str, plaintext_dek: bytes) -> None:
        """Cache a DEK, evicting the least recently used entry when full."""
        key = self._key(encrypted_dek)
        try:
            value = bytearray(check_bytes("plaintext_dek", plaintext_dek))
        except TypeError as exc:
            raise DEKCacheError(str(exc), exc) from exc
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                _wipe(old[1])
            while len(self._entries) >= self.max_size:
                _wipe(self._entries.popitem(last=False)[1][1])
            self._entries[key] = (self._clock() + self.ttl_seconds, value)

    def invalidate(self, encrypted_dek: str) -> None:
        """Remove one entry, if present."""
        key = self._key(encrypted_dek)
        with self._lock:
            found = self._entries.pop(key, None)
        if found is not None:
            _wipe(found[1])

    def clear(self) -> None:
        """Remove every entry (call it on key rotation)."""
        with self._lock:
            entries, self._entries = self._entries, OrderedDict()
        for _, dek in entries.values():
            _wipe(dek)

    @property
    def size(self) -> int:
        """How many entries the cache holds now (expired ones until a ``get`` drops them)."""
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        """Settings and size only; DEK values are never shown."""
        return f"DEKCache(max_size={self.max_size}, ttl_seconds={self.ttl_seconds})"
