from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import pytest

from broker.errors import (
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    ResourceExhaustedError,
)
from broker.kms.base import (
    BackendKey,
    GeneratedKey,
    KeyVersionInfo,
    KmsBackend,
    WrappedKey,
)
from broker.kms.resilience import BackendBusyError, ResilienceSettings, ResilientBackend

if TYPE_CHECKING:
    from collections.abc import Mapping

WRAPPED = WrappedKey(wrapped=b"w", key_version=1)
DESCRIBED = BackendKey(key_id="k", current_version=1)


class FakeClock:
    """Monotonic time that only moves when a test (or the backend's sleep) moves it."""

    def __init__(self) -> None:
        """Start at an arbitrary instant."""
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        """Read the time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the sleep and move time forward by it, at once."""
        self.sleeps.append(seconds)
        self.now += seconds


class FakeBackend:
    """A backend whose every call takes the next scripted outcome (an exception or OK)."""

    scheme = "fake"

    def __init__(self, outcomes: list[BaseException | None] | None = None) -> None:
        """Script the outcomes; when they run out, calls succeed."""
        self.outcomes = list(outcomes or [])
        self.calls = 0
        self.seen: list[tuple[object, ...]] = []
        self.block: asyncio.Event | None = None
        self.closed = False

    async def _next(self, *args: object) -> None:
        self.calls += 1
        self.seen.append(args)
        if self.block is not None:
            await self.block.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """Scripted."""
        await self._next(key_id, context)
        return GeneratedKey(plaintext=bytearray(32), wrapped=b"w", key_version=1)

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Scripted."""
        await self._next(key_id, dek, context)
        return WRAPPED

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Scripted."""
        await self._next(key_id, key_version, wrapped, context)
        return bytearray(32)

    async def describe_key(self, key_id: str) -> BackendKey:
        """Scripted."""
        await self._next(key_id)
        return DESCRIBED

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Scripted."""
        await self._next(key_id)
        return DESCRIBED

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Scripted."""
        await self._next(key_id, version)
        return KeyVersionInfo(version=version, state="enabled" if enabled else "disabled")

    async def health(self) -> None:
        """Scripted."""
        await self._next()

    async def close(self) -> None:
        """Remember it was closed."""
        self.closed = True


def make(
    outcomes: list[BaseException | None] | None = None, **settings: Any
) -> tuple[ResilientBackend, FakeBackend, FakeClock]:
    """A wrapped fake backend on a fake clock, with jitter pinned to its maximum."""
    clock = FakeClock()
    inner = FakeBackend(outcomes)
    backend = ResilientBackend(
        inner,
        ResilienceSettings(**settings),
        clock=clock,
        sleep=clock.sleep,
        jitter=lambda: 1.0,
    )
    return backend, inner, clock


def state_after(backend: ResilientBackend, clock: FakeClock, seconds: float) -> str:
    """The breaker state once `seconds` more have passed."""
    clock.now += seconds
    return backend.state


def down() -> KmsUnavailableError:
    """A fresh retryable failure."""
    return KmsUnavailableError()


class TestRetries:
    """Which failures are retried, how often and how long apart."""

    @pytest.mark.parametrize(
        ("outcomes", "expected_error", "expected_calls"),
        [
            pytest.param([None], None, 1, id="success-first-try"),
            pytest.param([down(), None], None, 2, id="unavailable-then-ok"),
            pytest.param([down(), down(), None], None, 3, id="ok-on-last-attempt"),
            pytest.param([down(), down(), down()], KmsUnavailableError, 3, id="gives-up"),
            pytest.param([KmsKeyNotFoundError()], KmsKeyNotFoundError, 1, id="not-found"),
            pytest.param([KmsAuthenticationError()], KmsAuthenticationError, 1, id="auth"),
            pytest.param(
                [KmsInvalidCiphertextError()], KmsInvalidCiphertextError, 1, id="bad-ciphertext"
            ),
            pytest.param([KeyStateError()], KeyStateError, 1, id="disabled-version"),
            pytest.param([down(), KmsKeyNotFoundError()], KmsKeyNotFoundError, 2, id="then-final"),
        ],
    )
    async def test_only_unavailability_is_retried(
        self,
        outcomes: list[BaseException | None],
        expected_error: type[Exception] | None,
        expected_calls: int,
    ) -> None:
        """Unavailability is retried up to max_attempts; every other error is final at once."""
        backend, inner, _ = make(outcomes)
        if expected_error is None:
            assert await backend.wrap("k", b"d" * 32, {}) == WRAPPED
        else:
            with pytest.raises(expected_error):
                await backend.wrap("k", b"d" * 32, {})
        assert inner.calls == expected_calls
        assert backend.counters.retries == expected_calls - 1

    @pytest.mark.parametrize(
        ("base", "cap", "jitter", "expected"),
        [
            pytest.param(0.05, 1.0, 1.0, [0.05, 0.1, 0.2], id="doubles"),
            pytest.param(0.5, 0.6, 1.0, [0.5, 0.6, 0.6], id="capped"),
            pytest.param(0.2, 1.0, 0.5, [0.1, 0.2, 0.4], id="full-jitter-scales"),
            pytest.param(0.2, 1.0, 0.0, [0.0, 0.0, 0.0], id="jitter-can-be-zero"),
        ],
    )
    async def test_backoff_is_exponential_with_full_jitter(
        self, base: float, cap: float, jitter: float, expected: list[float]
    ) -> None:
        """The wait before retry n is uniform in [0, min(cap, base * 2^(n-1)))."""
        clock = FakeClock()
        inner = FakeBackend([down()] * 4)
        settings = ResilienceSettings(
            max_attempts=4, backoff_base=base, backoff_max=cap, timeout=30, breaker_failures=10
        )
        backend = ResilientBackend(
            inner, settings, clock=clock, sleep=clock.sleep, jitter=lambda: jitter
        )
        with pytest.raises(KmsUnavailableError):
            await backend.unwrap("k", 1, b"w", {})
        assert clock.sleeps == pytest.approx(expected)

    async def test_backoff_never_sleeps_past_the_deadline(self) -> None:
        """A retry whose backoff would end after the call's deadline is not attempted."""
        backend, inner, clock = make([down(), None], timeout=0.5, backoff_base=1.0)
        with pytest.raises(KmsUnavailableError):
            await backend.describe_key("k")
        assert inner.calls == 1
        assert clock.sleeps == []

    async def test_rotation_is_never_retried(self) -> None:
        """A lost answer to a rotation must not create a second new version."""
        backend, inner, _ = make([down(), None])
        with pytest.raises(KmsUnavailableError):
            await backend.rotate_key("k")
        assert inner.calls == 1

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda b: b.generate_data_key("k", {}), id="generate_data_key"),
            pytest.param(lambda b: b.unwrap("k", 1, b"w", {}), id="unwrap"),
            pytest.param(lambda b: b.describe_key("k"), id="describe_key"),
            pytest.param(lambda b: b.set_version_state("k", 1, enabled=False), id="set_state"),
        ],
    )
    async def test_every_idempotent_operation_retries(self, call: Any) -> None:
        """Each idempotent operation goes through the same retry path."""
        backend, inner, _ = make([down(), None])
        await call(backend)
        assert inner.calls == 2


class TestCircuitBreaker:
    """Closed -> open -> half-open -> closed, driven by a fake clock."""

    async def test_opens_after_consecutive_failures_and_fails_fast(self) -> None:
        """After N failed attempts calls are rejected without reaching the KMS."""
        backend, inner, _ = make([down()] * 4, max_attempts=1, breaker_failures=3)
        for _ in range(3):
            with pytest.raises(KmsUnavailableError):
                await backend.wrap("k", b"d", {})
        assert backend.state == "open"
        with pytest.raises(KmsUnavailableError, match="circuit open"):
            await backend.wrap("k", b"d", {})
        assert inner.calls == 3
        assert backend.counters.rejected_open == 1
        assert backend.counters.failures == 3

    async def test_retries_stop_once_the_circuit_opens(self) -> None:
        """A call whose failures open the breaker stops retrying at that point."""
        backend, inner, _ = make([down()] * 5, max_attempts=5, breaker_failures=2)
        with pytest.raises(KmsUnavailableError):
            await backend.wrap("k", b"d", {})
        assert inner.calls == 2
        assert backend.state == "open"

    @pytest.mark.parametrize(
        ("probe", "expected_state"),
        [
            pytest.param(None, "closed", id="probe-succeeds"),
            pytest.param(KmsKeyNotFoundError(), "closed", id="probe-answered-not-found"),
            pytest.param(down(), "open", id="probe-fails"),
        ],
    )
    async def test_half_open_probe_decides(
        self, probe: BaseException | None, expected_state: str
    ) -> None:
        """After the cool-down one probe goes through; its outcome closes or reopens."""
        backend, inner, clock = make([down()], max_attempts=1, breaker_failures=1)
        with pytest.raises(KmsUnavailableError):
            await backend.health()
        assert state_after(backend, clock, 4.9) == "open"
        assert state_after(backend, clock, 0.1) == "half_open"
        inner.outcomes = [probe]
        with contextlib.suppress(KmsUnavailableError, KmsKeyNotFoundError):
            await backend.describe_key("k")
        assert backend.state == expected_state
        assert inner.calls == 2

    async def test_reopened_breaker_waits_a_full_cool_down(self) -> None:
        """A failed probe restarts the cool-down from the probe's time."""
        backend, _, clock = make([down(), down()], max_attempts=1, breaker_failures=1)
        with pytest.raises(KmsUnavailableError):
            await backend.health()
        clock.now += 5.0
        with pytest.raises(KmsUnavailableError):
            await backend.health()
        assert state_after(backend, clock, 4.0) == "open"
        assert state_after(backend, clock, 1.0) == "half_open"

    async def test_half_open_admits_a_single_probe(self) -> None:
        """While the probe is in flight, other calls fail fast instead of piling on."""
        backend, inner, clock = make([down()], max_attempts=1, breaker_failures=1)
        with pytest.raises(KmsUnavailableError):
            await backend.health()
        clock.now += 5.0
        inner.block = asyncio.Event()
        probe = asyncio.create_task(backend.describe_key("k"))
        await asyncio.sleep(0)
        with pytest.raises(KmsUnavailableError, match="circuit open"):
            await backend.describe_key("k")
        inner.block.set()
        assert await probe == DESCRIBED
        assert backend.state == "closed"

    async def test_cancelled_probe_frees_the_slot(self) -> None:
        """A probe cancelled by its caller lets the next call probe."""
        backend, inner, clock = make([down()], max_attempts=1, breaker_failures=1)
        with pytest.raises(KmsUnavailableError):
            await backend.health()
        clock.now += 5.0
        inner.block = asyncio.Event()
        probe = asyncio.create_task(backend.describe_key("k"))
        await asyncio.sleep(0)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        inner.block = None
        assert await backend.describe_key("k") == DESCRIBED
        assert backend.state == "closed"

    async def test_answers_are_not_failures(self) -> None:
        """Not-found and authentication errors mean the KMS is up: the breaker stays closed."""
        errors: list[BaseException | None] = [KmsKeyNotFoundError(), KmsAuthenticationError()] * 3
        backend, _, _ = make(errors, breaker_failures=2)
        for _ in range(6):
            with pytest.raises((KmsKeyNotFoundError, KmsAuthenticationError)):
                await backend.describe_key("k")
        assert backend.state == "closed"
        assert backend.counters.failures == 0

    async def test_success_resets_the_failure_count(self) -> None:
        """Only consecutive failures count toward opening."""
        outcomes: list[BaseException | None] = [down(), None, down(), None, down()]
        backend, _, _ = make(outcomes, max_attempts=1, breaker_failures=2)
        for _ in range(5):
            with contextlib.suppress(KmsUnavailableError):
                await backend.health()
        assert backend.state == "closed"


class TestTimeout:
    """One deadline per call, on the real event loop clock."""

    async def test_hanging_call_becomes_unavailable_within_the_timeout(self) -> None:
        """A KMS that never answers costs the caller at most the timeout, not forever."""
        inner = FakeBackend()
        inner.block = asyncio.Event()
        backend = ResilientBackend(inner, ResilienceSettings(timeout=0.2, max_attempts=3))
        started = time.monotonic()
        with pytest.raises(KmsUnavailableError, match="timed out"):
            await backend.wrap("k", b"d", {})
        assert time.monotonic() - started < 1.0
        assert inner.calls == 1
        assert backend.counters.failures == 1

    async def test_deadline_covers_all_attempts(self) -> None:
        """Retries share one deadline: slow failures cannot multiply the wait."""

        class SlowDown(FakeBackend):
            async def _next(self, *args: object) -> None:
                self.calls += 1
                self.seen.append(args)
                await asyncio.sleep(0.08)
                raise KmsUnavailableError

        inner = SlowDown()
        settings = ResilienceSettings(timeout=0.2, max_attempts=10, backoff_base=0.01)
        backend = ResilientBackend(inner, settings)
        started = time.monotonic()
        with pytest.raises(KmsUnavailableError):
            await backend.unwrap("k", 1, b"w", {})
        assert time.monotonic() - started < 0.6
        assert 2 <= inner.calls <= 3


class TestRateLimit:
    """The per-backend token bucket."""

    async def test_burst_then_waits_for_tokens(self) -> None:
        """Calls beyond the per-second rate wait for the next token."""
        backend, inner, clock = make(rate_limit_per_second=2.0)
        for _ in range(4):
            await backend.wrap("k", b"d", {})
        assert inner.calls == 4
        assert clock.sleeps == pytest.approx([0.5, 0.5])

    async def test_refills_over_time(self) -> None:
        """Tokens come back at the configured rate while idle."""
        backend, _, clock = make(rate_limit_per_second=1.0)
        await backend.wrap("k", b"d", {})
        clock.now += 1.0
        await backend.wrap("k", b"d", {})
        assert clock.sleeps == []

    async def test_rejects_when_the_wait_exceeds_the_timeout(self) -> None:
        """Over the limit for longer than the deadline: unavailable, the KMS is not called."""
        backend, inner, _ = make(rate_limit_per_second=0.1, timeout=3.0)
        await backend.wrap("k", b"d", {})
        with pytest.raises(KmsUnavailableError, match="rate limit"):
            await backend.wrap("k", b"d", {})
        assert inner.calls == 1
        assert backend.counters.rejected_rate_limit == 1
        assert backend.state == "closed"


class TestSettings:
    """Validation of ResilienceSettings."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("timeout", 0),
            ("timeout", float("inf")),
            ("max_attempts", 0),
            ("backoff_base", -1.0),
            ("backoff_max", 0),
            ("breaker_failures", 0),
            ("breaker_reset_seconds", 0),
            ("rate_limit_per_second", 0),
        ],
    )
    def test_rejects_values_that_disable_a_safeguard(self, field: str, value: float) -> None:
        """A misconfiguration names the field instead of silently disabling protection."""
        kwargs: dict[str, Any] = {field: value}
        with pytest.raises(ConfigError, match=field):
            ResilienceSettings(**kwargs)

    def test_defaults(self) -> None:
        """The documented defaults."""
        settings = ResilienceSettings()
        assert (settings.timeout, settings.max_attempts, settings.breaker_failures) == (3.0, 3, 5)
        assert settings.rate_limit_per_second is None


class TestWrapper:
    """The wrapper as a KmsBackend."""

    async def test_is_a_kms_backend_with_the_inner_scheme(self) -> None:
        """It can stand wherever a backend is expected."""
        backend, _, _ = make()
        assert isinstance(backend, KmsBackend)
        assert backend.scheme == "fake"

    async def test_close_closes_the_inner_backend(self) -> None:
        """Closing the wrapper releases the wrapped backend's resources."""
        backend, inner, _ = make()
        await backend.close()
        assert inner.closed

    async def test_counts_calls(self) -> None:
        """Every call is counted once, however many attempts it took."""
        backend, _, _ = make([down(), None])
        await backend.wrap("k", b"d", {})
        await backend.health()
        counters = backend.counters
        assert (counters.calls, counters.failures, counters.retries) == (2, 1, 1)


class PooledBackend(FakeBackend):
    """A backend with one connection (`max_concurrency = 1`) whose calls take real time."""

    max_concurrency = 1

    def __init__(self, seconds: float = 0.0, outcomes: list[BaseException | None] | None = None):
        """Every call holds the connection `seconds` before its scripted outcome."""
        super().__init__(outcomes)
        self.seconds = seconds
        self.started = 0

    async def _next(self, *args: object) -> None:
        self.started += 1
        await asyncio.sleep(self.seconds)
        await super()._next(*args)


def pooled(inner: PooledBackend, **settings: Any) -> ResilientBackend:
    """A wrapped pooled backend on the real clock."""
    return ResilientBackend(inner, ResilienceSettings(**settings))


class TestCallSlots:
    """A backend declaring max_concurrency: its queue is the broker's, not a KMS failure."""

    async def test_queued_past_the_deadline_is_busy_and_no_failure(self) -> None:
        """Eight callers on one 0.2 s connection, 0.5 s deadline: two OK, the queue busy."""
        inner = PooledBackend(0.2)
        backend = pooled(inner, timeout=0.5, breaker_failures=1)
        outcomes = await asyncio.gather(
            *(backend.wrap("k", b"d", {}) for _ in range(8)), return_exceptions=True
        )
        kinds = [type(o).__name__ for o in outcomes]
        assert kinds.count("WrappedKey") in {1, 2}, kinds
        assert kinds.count("BackendBusyError") >= 4, kinds
        assert set(kinds) <= {"WrappedKey", "BackendBusyError", "KmsUnavailableError"}
        busy = next(o for o in outcomes if isinstance(o, BackendBusyError))
        assert isinstance(busy, ResourceExhaustedError)
        assert str(busy) == "key management backend busy; retry later"
        await asyncio.sleep(0.3)  # the call whose caller timed out ends, and succeeds
        assert backend.state == "closed"
        assert backend.counters.failures == 0
        assert backend.counters.rejected_busy == kinds.count("BackendBusyError")
        assert inner.started == 8 - backend.counters.rejected_busy

    async def test_a_call_outlives_its_caller_and_keeps_its_slot(self) -> None:
        """A cancelled caller's call holds the connection until it ends; its success counts."""
        inner = PooledBackend()
        inner.block = asyncio.Event()
        backend = pooled(inner, timeout=5.0, breaker_failures=1)
        first = asyncio.create_task(backend.describe_key("k"))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(backend.describe_key("k"), timeout=0.1)
        assert inner.started == 1, "the second caller waited for the connection"
        inner.block.set()
        await asyncio.sleep(0.01)
        assert backend.state == "closed"
        assert await backend.describe_key("k") == DESCRIBED
        assert inner.started == 2

    async def test_a_hung_call_is_one_failure_and_its_queue_none(self) -> None:
        """The hung call fails at its deadline and opens the circuit; the queue never calls."""
        inner = PooledBackend()
        inner.block = asyncio.Event()
        backend = pooled(inner, timeout=0.2, max_attempts=1, breaker_failures=1)
        outcomes = await asyncio.gather(
            *(backend.unwrap("k", 1, b"w", {}) for _ in range(4)), return_exceptions=True
        )
        assert str(outcomes[0]) == "key management service timed out; retry later"
        for queued in outcomes[1:]:
            assert isinstance(queued, (BackendBusyError, KmsUnavailableError)), queued
            assert "timed out" not in str(queued)
        assert (backend.counters.failures, backend.state, inner.started) == (1, "open", 1)

    async def test_a_queued_call_gets_its_wait_back(self) -> None:
        """Its caller gives up at 0.25 s, but a call queued 0.15 s may run to 0.4 s: no failure."""
        inner = PooledBackend(0.15)
        backend = pooled(inner, timeout=0.25, max_attempts=1, breaker_failures=1)
        first, second = await asyncio.gather(
            backend.wrap("k", b"d", {}), backend.wrap("k", b"d", {}), return_exceptions=True
        )
        assert first == WRAPPED
        assert str(second) == "key management service timed out; retry later"
        await asyncio.sleep(0.15)
        assert (inner.calls, backend.counters.failures, backend.state) == (2, 0, "closed")

    async def test_an_open_circuit_fails_fast_without_queueing(self) -> None:
        """With the circuit open a call is refused at once, not queued for a connection."""
        inner = PooledBackend(outcomes=[down()])
        backend = pooled(inner, max_attempts=1, breaker_failures=1)
        with pytest.raises(KmsUnavailableError):
            await backend.health()
        with pytest.raises(KmsUnavailableError, match="circuit open"):
            await backend.health()
        counters = backend.counters
        assert (counters.rejected_open, counters.rejected_busy, inner.started) == (1, 0, 1)

    async def test_close_cancels_calls_nobody_waits_for(self) -> None:
        """Closing the wrapper ends the calls left running by callers that gave up."""
        inner = PooledBackend()
        inner.block = asyncio.Event()
        backend = pooled(inner, timeout=0.1, max_attempts=1)
        with pytest.raises(KmsUnavailableError, match="timed out"):
            await backend.describe_key("k")
        await backend.close()
        assert inner.closed
        assert not backend._in_flight

    @pytest.mark.parametrize("declared", [None, 0, True])
    async def test_no_positive_bound_means_no_queue(self, declared: object) -> None:
        """Without a positive max_concurrency, calls go straight to the backend, as before."""
        inner = PooledBackend(0.05)
        inner.max_concurrency = declared  # type: ignore[assignment]
        backend = pooled(inner, timeout=1.0)
        await asyncio.gather(*(backend.wrap("k", b"d", {}) for _ in range(10)))
        assert backend.counters.rejected_busy == 0
