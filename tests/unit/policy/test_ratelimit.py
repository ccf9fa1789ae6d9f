"""Token buckets per caller and per caller and key, on an injected clock."""

from __future__ import annotations

from broker.policy.authorizer import Caller
from broker.policy.loader import parse_policy
from broker.policy.ratelimit import RateLimiter

POLICY = parse_policy(
    {
        "limits": [
            {"id": "per-caller", "callers": ["app"], "rate": 2.0, "burst": 3},
            {"id": "pii-key", "callers": ["*"], "keys": ["pii"], "rate": 1.0, "burst": 1},
        ]
    },
    "test",
)
APP = Caller("listener", "app")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        """Start at an arbitrary moment."""
        self.now = 100.0

    def __call__(self) -> float:
        """The current moment."""
        return self.now


class TestRateLimiter:
    """Burst, refill, retry hint and scoping."""

    def test_burst_then_refill(self):
        """Three calls pass, the fourth waits 500 ms at 2/s; after it, one more passes."""
        clock = Clock()
        limiter = RateLimiter(clock)
        assert [limiter.take(POLICY, APP, "k") for _ in range(3)] == [None, None, None]
        limited = limiter.take(POLICY, APP, "k")
        assert limited is not None
        assert (limited.limit_id, limited.retry_after_ms) == ("per-caller", 500)
        clock.now += 0.5
        assert limiter.take(POLICY, APP, "k") is None

    def test_per_key_bucket(self):
        """The pii limit applies per caller and key; other callers have their own bucket."""
        limiter = RateLimiter(Clock())
        other = Caller("listener", "other")
        assert limiter.take(POLICY, other, "pii") is None
        assert limiter.take(POLICY, other, "pii").limit_id == "pii-key"
        assert limiter.take(POLICY, Caller("listener", "third"), "pii") is None
        assert limiter.take(POLICY, other, "default") is None

    def test_refused_operation_takes_no_token(self):
        """When one bucket is empty the others are not charged."""
        clock = Clock()
        limiter = RateLimiter(clock)
        assert limiter.take(POLICY, APP, "pii") is None
        assert limiter.take(POLICY, APP, "pii").limit_id == "pii-key"
        assert [limiter.take(POLICY, APP, "k") for _ in range(2)] == [None, None]
        assert limiter.take(POLICY, APP, "k").limit_id == "per-caller"
