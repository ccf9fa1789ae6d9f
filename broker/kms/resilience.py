"""Resilience for any KMS backend: deadline, retries, circuit breaker and rate limit in one place.

`ResilientBackend` wraps another `KmsBackend`, so vendor modules stay free of retry loops and
every backend fails the same way when its KMS is slow or down (docs/resilience.md):

* each call has a deadline (`timeout`) covering every attempt, backoff and rate-limit wait;
  running out of it raises `KmsUnavailableError`;
* only `KmsUnavailableError` (and the deadline) is retried, with exponential backoff and full
  jitter; not-found, authentication and invalid-ciphertext errors are answers, not failures;
* a circuit breaker opens after `breaker_failures` consecutive failed attempts, fails fast
  while open, lets one probe through after `breaker_reset_seconds` and closes on its success;
* an optional token bucket caps attempts per second; a caller waits for a token only as long
  as its deadline allows;
* a backend whose SDK calls run on a bounded pool (its `max_concurrency`) gets as many call
  slots: time spent waiting for one is the broker's queue, not the KMS's, so it never counts
  against the breaker, and a caller whose deadline passes while it waits gets
  `BackendBusyError` (RESOURCE_EXHAUSTED, retryable). A call that got a slot is judged with
  the time it waited given back (its deadline moves by that much) and keeps the slot until it
  ends, even if its caller stopped waiting, because the SDK's worker thread stays busy anyway.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from broker.errors import ConfigError, KmsUnavailableError, ResourceExhaustedError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from broker.kms.base import BackendKey, GeneratedKey, KeyVersionInfo, KmsBackend, WrappedKey

__all__ = [
    "BackendBusyError",
    "BreakerState",
    "ResilienceCounters",
    "ResilienceSettings",
    "ResilientBackend",
]

BreakerState = Literal["closed", "open", "half_open"]
_T = TypeVar("_T")

CIRCUIT_OPEN_MESSAGE = "key management service unavailable (circuit open); retry later"
TIMEOUT_MESSAGE = "key management service timed out; retry later"
RATE_LIMIT_MESSAGE = "key management service rate limit reached; retry later"
BUSY_MESSAGE = "key management backend busy; retry later"


@dataclass(frozen=True, slots=True)
class ResilienceSettings:
    """Limits for one wrapped backend; the defaults suit a KMS a few milliseconds away."""

    timeout: float = 3.0
    max_attempts: int = 3
    backoff_base: float = 0.05
    backoff_max: float = 1.0
    breaker_failures: int = 5
    breaker_reset_seconds: float = 5.0
    rate_limit_per_second: float | None = None

    def __post_init__(self) -> None:
        """Reject values that would disable a safeguard by accident."""
        positive = {
            "timeout": self.timeout,
            "backoff_base": self.backoff_base,
            "backoff_max": self.backoff_max,
            "breaker_reset_seconds": self.breaker_reset_seconds,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"resilience.{name} must be a positive number of seconds")
        if self.max_attempts < 1:
            raise ConfigError("resilience.max_attempts must be at least 1")
        if self.breaker_failures < 1:
            raise ConfigError("resilience.breaker_failures must be at least 1")
        rate = self.rate_limit_per_second
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError("resilience.rate_limit_per_second must be positive or unset")


@dataclass(frozen=True, slots=True)
class ResilienceCounters:
    """A snapshot of the counters exported as metrics."""

    calls: int
    failures: int
    retries: int
    rejected_open: int
    rejected_rate_limit: int
    rejected_busy: int


class _RateLimitedError(KmsUnavailableError):
    """Over the rate limit for longer than the deadline allows; never retried."""

    default_message = RATE_LIMIT_MESSAGE


class BackendBusyError(ResourceExhaustedError):
    """Every backend connection stayed taken until the deadline: the KMS was never asked.

    Not a `KmsUnavailableError`: the KMS may be healthy, so this trips no breaker, is not
    retried within the call (its deadline is spent), and serves no stale DEK.
    """

    default_message = BUSY_MESSAGE


class _Breaker:
    """Consecutive-failure circuit breaker; time comes from the injected clock."""

    def __init__(self, failures: int, reset_seconds: float, clock: Callable[[], float]) -> None:
        """Start closed."""
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self._consecutive = 0
        self._opened_at = 0.0
        self._open = False
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """Closed, open, or half-open once the cool-down has passed."""
        if not self._open:
            return "closed"
        if self._clock() - self._opened_at >= self._reset:
            return "half_open"
        return "open"

    def admit(self) -> bool:
        """Whether an attempt may go to the KMS now; half-open admits a single probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """The KMS answered: close and forget past failures."""
        self._open = False
        self._consecutive = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        """The KMS failed: (re)open when the threshold is reached or a probe failed."""
        self._consecutive += 1
        if self._probe_in_flight or self._consecutive >= self._threshold:
            self._open = True
            self._opened_at = self._clock()
        self._probe_in_flight = False

    def release_probe(self) -> None:
        """A probe ended without an outcome (cancelled): let the next call probe instead."""
        self._probe_in_flight = False


class _TokenBucket:
    """Calls-per-second limit with a burst of one second; waits are reservations."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        """Start full."""
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._clock = clock
        self._updated = clock()

    def reserve(self, max_wait: float) -> float | None:
        """Take a token; return the wait before using it, or None when it exceeds max_wait."""
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated = now
        wait = max(0.0, (1.0 - self._tokens) / self._rate)
        if wait > max_wait:
            return None
        self._tokens -= 1.0
        return wait


class ResilientBackend:
    """A KmsBackend that adds deadline, retries, circuit breaker and rate limit to another."""

    def __init__(
        self,
        inner: KmsBackend,
        settings: ResilienceSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """Wrap `inner`; clock, sleep and jitter (uniform in [0, 1)) are injectable for tests."""
        self._inner = inner
        self._settings = settings or ResilienceSettings()
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.scheme = inner.scheme
        self._breaker = _Breaker(
            self._settings.breaker_failures, self._settings.breaker_reset_seconds, clock
        )
        rate = self._settings.rate_limit_per_second
        self._bucket = _TokenBucket(rate, clock) if rate is not None else None
        self._calls = self._failures = self._retries = 0
        self._rejected_open = self._rejected_rate = self._rejected_busy = 0
        self._limit = _concurrency_of(inner)
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._in_flight: set[asyncio.Task[object]] = set()

    @property
    def inner(self) -> KmsBackend:
        """The wrapped backend (for diagnostics)."""
        return self._inner

    @property
    def state(self) -> BreakerState:
        """The circuit breaker's state, exported as a metric."""
        return self._breaker.state

    @property
    def counters(self) -> ResilienceCounters:
        """Calls, failed attempts, retries and fast rejections so far."""
        return ResilienceCounters(
            calls=self._calls,
            failures=self._failures,
            retries=self._retries,
            rejected_open=self._rejected_open,
            rejected_rate_limit=self._rejected_rate,
            rejected_busy=self._rejected_busy,
        )

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """Generate a DEK; retried, since every attempt makes a fresh one."""
        return await self._call(lambda: self._inner.generate_data_key(key_id, context))

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Wrap a DEK; retried."""
        return await self._call(lambda: self._inner.wrap(key_id, dek, context))

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Unwrap a DEK; retried, but an invalid ciphertext is final."""
        return await self._call(lambda: self._inner.unwrap(key_id, key_version, wrapped, context))

    async def describe_key(self, key_id: str) -> BackendKey:
        """Describe a key; retried."""
        return await self._call(lambda: self._inner.describe_key(key_id))

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Rotate once: a retry after a lost answer could create two versions."""
        return await self._call(lambda: self._inner.rotate_key(key_id), attempts=1)

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Enable or disable a version; retried, since it is idempotent."""
        return await self._call(
            lambda: self._inner.set_version_state(key_id, version, enabled=enabled)
        )

    async def health(self) -> None:
        """Check the KMS once; an open circuit reports unavailable without asking it."""
        await self._call(self._inner.health, attempts=1)

    async def close(self) -> None:
        """Cancel the calls still running for callers that stopped waiting; close the backend."""
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._inner.close()

    async def _call(
        self, operation: Callable[[], Awaitable[_T]], *, attempts: int | None = None
    ) -> _T:
        """Run attempts until success, a final error, max_attempts or the deadline."""
        self._calls += 1
        deadline = self._clock() + self._settings.timeout
        limit = attempts or self._settings.max_attempts
        attempt = 1
        while True:
            try:
                return await self._attempt(operation, deadline)
            except _RateLimitedError:
                raise
            except KmsUnavailableError:
                if attempt >= limit or self._breaker.state != "closed":
                    raise
                if not await self._backoff(attempt, deadline):
                    raise
            attempt += 1
            self._retries += 1

    async def _attempt(self, operation: Callable[[], Awaitable[_T]], deadline: float) -> _T:
        """One attempt: breaker admission, rate limit, then the call; outcome to the breaker."""
        if self._limit is not None:
            return await self._attempt_in_slot(operation, deadline, self._limit)
        await self._admitted(deadline)
        return await self._judged(self._bounded(operation, deadline))

    async def _admitted(self, deadline: float) -> None:
        """Breaker admission, then a rate-limit token; a failed wait gives a probe slot back."""
        if not self._breaker.admit():
            self._rejected_open += 1
            raise KmsUnavailableError(CIRCUIT_OPEN_MESSAGE)
        try:
            await self._take_token(deadline)
        except BaseException:
            self._breaker.release_probe()
            raise

    async def _judged(self, call: Awaitable[_T]) -> _T:
        """Await a call that went to the KMS and tell the breaker how the KMS did."""
        try:
            result = await call
        except KmsUnavailableError:
            self._failures += 1
            self._breaker.record_failure()
            raise
        except Exception:
            # Any other error is an answer from the KMS: it is up, so the breaker closes.
            self._breaker.record_success()
            raise
        except BaseException:
            # Cancelled: no outcome, but a probe slot must not stay taken forever.
            self._breaker.release_probe()
            raise
        self._breaker.record_success()
        return result

    async def _attempt_in_slot(
        self, operation: Callable[[], Awaitable[_T]], deadline: float, limit: int
    ) -> _T:
        """Wait for a call slot within the deadline, then call; the queue is not the KMS's."""
        if self._breaker.state == "open":  # fail fast rather than queue behind a dead KMS
            self._rejected_open += 1
            raise KmsUnavailableError(CIRCUIT_OPEN_MESSAGE)
        slots = self._semaphore(limit)
        queued = await self._wait_for_slot(slots, deadline)
        try:
            await self._admitted(deadline)
        except BaseException:
            slots.release()
            raise
        call = asyncio.create_task(self._in_slot(slots, operation, deadline + queued))
        self._in_flight.add(call)
        call.add_done_callback(self._settled)
        # Unqueued, the call's own deadline is the caller's: wait for its outcome. Queued, the
        # caller gives up at its deadline and the call runs on to its later one.
        wait = deadline - self._clock() if queued else None
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(call)
        except TimeoutError as exc:
            raise KmsUnavailableError(TIMEOUT_MESSAGE) from exc

    def _semaphore(self, limit: int) -> asyncio.Semaphore:
        """The call slots of the running event loop (a backend may outlive a loop)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(limit))
        return self._slots[1]

    async def _wait_for_slot(self, slots: asyncio.Semaphore, deadline: float) -> float:
        """Take a call slot and return the seconds waited; BackendBusyError past the deadline."""
        if not slots.locked():
            await slots.acquire()  # free: taken without suspending
            return 0.0
        started = self._clock()
        try:
            async with asyncio.timeout(max(0.0, deadline - started)):
                await slots.acquire()
        except TimeoutError:
            self._rejected_busy += 1
            raise BackendBusyError(BUSY_MESSAGE) from None
        return self._clock() - started

    async def _in_slot(
        self, slots: asyncio.Semaphore, operation: Callable[[], Awaitable[_T]], deadline: float
    ) -> _T:
        """The call, judged by the breaker against its own deadline, then its slot freed."""
        try:
            return await self._judged(self._bounded(operation, deadline))
        finally:
            slots.release()

    def _settled(self, call: asyncio.Task[object]) -> None:
        """Forget a finished call; its error was the breaker's, whoever stopped waiting for it."""
        self._in_flight.discard(call)
        if not call.cancelled():
            call.exception()

    async def _bounded(self, operation: Callable[[], Awaitable[_T]], deadline: float) -> _T:
        """Run the call within what is left of the deadline; running out is unavailability."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise KmsUnavailableError(TIMEOUT_MESSAGE)
        try:
            async with asyncio.timeout(remaining):
                return await operation()
        except TimeoutError as exc:
            raise KmsUnavailableError(TIMEOUT_MESSAGE) from exc

    async def _take_token(self, deadline: float) -> None:
        """Wait for a rate-limit token, but never past the deadline."""
        if self._bucket is None:
            return
        wait = self._bucket.reserve(max(0.0, deadline - self._clock()))
        if wait is None:
            self._rejected_rate += 1
            raise _RateLimitedError(RATE_LIMIT_MESSAGE)
        if wait > 0:
            await self._sleep(wait)

    async def _backoff(self, attempt: int, deadline: float) -> bool:
        """Sleep min(max, base·2^(attempt-1)) times full jitter; False if past the deadline."""
        ceiling = min(self._settings.backoff_max, self._settings.backoff_base * 2 ** (attempt - 1))
        delay = ceiling * self._jitter()
        if self._clock() + delay >= deadline:
            return False
        await self._sleep(delay)
        return True


def _concurrency_of(backend: KmsBackend) -> int | None:
    """The backend's declared bound on calls in flight (`max_concurrency`), None when unbounded."""
    limit = getattr(backend, "max_concurrency", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    return None
