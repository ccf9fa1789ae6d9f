"""Token buckets per caller (and per caller and key), configured by the policy's `[[limits]]`.

State lives here, time comes from an injected monotonic clock, so tests drive it exactly.
An operation takes one token from every bucket that applies, or from none when any is empty.
Only operations the policy allowed are counted (rpc/audit_calls.py asks after the decision),
so denied attempts never drain a caller's buckets.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.policy.engine import matching_limits

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.policy.authorizer import Caller
    from broker.policy.model import Limit, Policy

__all__ = ["Limited", "RateLimiter"]

_MAX_BUCKETS = 100_000  # bounded memory whatever names callers present


@dataclass(frozen=True, slots=True)
class Limited:
    """The limit that refused an operation and when a token will be available again."""

    limit_id: str
    retry_after_ms: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float

    def refill(self, limit: Limit, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(limit.burst), self.tokens + elapsed * limit.rate)
        self.updated = now


class RateLimiter:
    """Every bucket of the policy in force; a reloaded limit with new numbers starts full."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Use this monotonic clock (seconds)."""
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, float, int, str, str], _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _bucket(self, limit: Limit, caller: str, scope: str, now: float) -> _Bucket:
        key = (limit.id, limit.rate, limit.burst, caller, scope)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(limit.burst), now)
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.refill(limit, now)
        return bucket

    def take(self, policy: Policy, caller: Caller, key: str) -> Limited | None:
        """Take one token from each applicable bucket, or report the first empty one."""
        applicable = matching_limits(policy, caller, key)
        if not applicable:
            return None
        with self._lock:
            now = self._clock()
            buckets = [(lim, self._bucket(lim, caller.name, s, now)) for lim, s in applicable]
            for limit, bucket in buckets:
                if bucket.tokens < 1.0:
                    wait = (1.0 - bucket.tokens) / limit.rate
                    return Limited(limit.id, max(1, int(wait * 1000 + 0.999)))
            for _, bucket in buckets:
                bucket.tokens -= 1.0
        return None
