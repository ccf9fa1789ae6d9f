"""The background prober: per-backend health names, the services that follow them, stop."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from broker.config.schema import KeyConfig
from broker.daemon.health import (
    BACKEND_HEALTH_PREFIX,
    BackendProber,
    ProbeSettings,
    service_needs,
)
from broker.errors import KmsAuthenticationError, KmsUnavailableError
from broker.kms.resilience import BackendBusyError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

ENVELOPE = "keybroker.v1.EnvelopeService"
SIGNING = "keybroker.v1.SigningService"
VAULT = BACKEND_HEALTH_PREFIX + "vault-transit"
LOCAL = BACKEND_HEALTH_PREFIX + "local"
FAST = ProbeSettings(interval=0.02, timeout=0.05)


class ProbedBackend:
    """A backend whose health() fails, hangs or passes as the test says."""

    def __init__(self) -> None:
        """Healthy until told otherwise."""
        self.outcome: BaseException | None = None
        self.hang = False
        self.calls = 0
        self.cancelled = 0

    async def health(self) -> None:
        """Hang until cancelled, raise the scripted error, or pass."""
        self.calls += 1
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.outcome is not None:
            raise self.outcome


class Health:
    """Stands in for BrokerServer.set_health: the last status published per name."""

    def __init__(self) -> None:
        """Nothing published yet."""
        self.states: dict[str, bool] = {}
        self.history: list[tuple[str, bool]] = []

    async def __call__(self, name: str, *, serving: bool) -> None:
        """Record one published status."""
        self.states[name] = serving
        self.history.append((name, serving))


async def eventually(check: Callable[[], bool], seconds: float = 2.0) -> None:
    """Wait until check() holds, failing the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[dict[str, Any]]]:
    """What the prober logs, captured (never written to a stream another test may have closed)."""
    with capture_logs() as entries:
        yield entries


@pytest.fixture
def health() -> Health:
    """A fresh health recorder."""
    return Health()


async def _start(
    backends: dict[str, ProbedBackend],
    health: Health,
    settings: ProbeSettings = FAST,
    keys: list[KeyConfig] | None = None,
) -> BackendProber:
    prober = BackendProber(backends, settings, needs=service_needs(keys or []))
    await prober.start(health)
    return prober


class TestProbes:
    """Each backend's state follows its health() answers."""

    async def test_hang_times_out_then_recovers(self, health, logs):
        """A hung health() is cut at the timeout and reported down; recovery reports up."""
        vault = ProbedBackend()
        vault.hang = True
        prober = await _start({"vault-transit": vault}, health)
        try:
            await eventually(lambda: "vault-transit" in prober.results)
            result = prober.results["vault-transit"]
            assert (result.up, result.reason) == (False, "TIMEOUT")
            assert result.seconds < 1.0
            assert health.states[VAULT] is False
            assert vault.cancelled >= 1, "the hung call was cancelled, not left running"
            vault.hang = False
            await eventually(lambda: health.states.get(VAULT) is True)
            assert prober.results["vault-transit"].up
            assert prober.results["vault-transit"].reason == ""
        finally:
            await prober.stop()
        down = [(e["backend"], e["reason"]) for e in logs if e["event"] == "backend_down"]
        assert down == [("vault-transit", "TIMEOUT")], "one warning per change of state"

    @pytest.mark.parametrize(
        ("error", "reason"),
        [
            (KmsUnavailableError("vault at 10.0.0.7 refused"), "KMS_UNAVAILABLE"),
            (KmsAuthenticationError(), "KMS_AUTHENTICATION"),
            (RuntimeError("token hvs.SECRET leaked in a message"), "INTERNAL"),
        ],
    )
    async def test_failure_is_a_reason_word(self, health, error, reason):
        """A failed probe keeps a stable reason word, never the error's text."""
        vault = ProbedBackend()
        vault.outcome = error
        prober = await _start({"vault-transit": vault}, health)
        try:
            await eventually(lambda: "vault-transit" in prober.results)
            result = prober.results["vault-transit"]
            assert (result.up, result.reason) == (False, reason)
            assert health.states[VAULT] is False
            assert result.at == pytest.approx(time.time(), abs=5)
        finally:
            await prober.stop()

    async def test_not_serving_until_first_probe(self, health):
        """Before its first probe ends, a backend is reported NOT_SERVING, not absent."""
        vault = ProbedBackend()
        vault.hang = True
        prober = await _start({"vault-transit": vault}, health, ProbeSettings(1.0, 5.0))
        try:
            assert health.states == {VAULT: False}
            assert prober.results == {}
        finally:
            await prober.stop()

    async def test_a_hung_backend_does_not_delay_another(self, health):
        """Backends are probed concurrently: a healthy one is up while another still hangs."""
        vault, local = ProbedBackend(), ProbedBackend()
        vault.hang = True
        backends = {"vault-transit": vault, "local": local}
        prober = await _start(backends, health, ProbeSettings(1.0, 5.0))
        try:
            await eventually(lambda: health.states.get(LOCAL) is True, seconds=1.0)
            assert "vault-transit" not in prober.results
        finally:
            await prober.stop()

    async def test_busy_backend_keeps_its_state(self, health):
        """A probe that found every backend connection taken never asked the KMS: no change."""
        vault = ProbedBackend()
        prober = await _start({"vault-transit": vault}, health)
        try:
            await eventually(lambda: health.states.get(VAULT) is True)
            vault.outcome = BackendBusyError()
            seen = vault.calls
            await eventually(lambda: vault.calls >= seen + 3)
            assert prober.results["vault-transit"].up
            assert health.states[VAULT] is True
        finally:
            await prober.stop()

    async def test_stop_cancels_a_running_probe(self, health):
        """stop() ends at once, cancelling a probe that would hang until its timeout."""
        vault = ProbedBackend()
        vault.hang = True
        prober = await _start({"vault-transit": vault}, health, ProbeSettings(1.0, 30.0))
        await eventually(lambda: vault.calls == 1)
        started = time.monotonic()
        await prober.stop()
        assert time.monotonic() - started < 1.0
        assert vault.cancelled == 1
        calls = vault.calls
        await asyncio.sleep(0.05)
        assert vault.calls == calls, "no probe runs after stop"

    async def test_zero_interval_turns_probes_off(self, health):
        """probe_seconds = 0: no probe, no health name."""
        vault = ProbedBackend()
        prober = await _start({"vault-transit": vault}, health, ProbeSettings(0.0, 5.0))
        await asyncio.sleep(0.05)
        await prober.stop()
        assert (vault.calls, health.history) == (0, [])

    async def test_only_changes_are_published(self, health):
        """A steady state is published once, not on every probe."""
        vault = ProbedBackend()
        prober = await _start({"vault-transit": vault}, health)
        try:
            await eventually(lambda: vault.calls >= 5)
        finally:
            await prober.stop()
        assert health.history == [(VAULT, False), (VAULT, True)]


class TestServices:
    """A service that needs keys is NOT_SERVING only when none of its keys can work."""

    KEYS = (
        KeyConfig("on-vault", "vault-transit://transit/app"),
        KeyConfig("on-local", "local://app"),
        KeyConfig("signer", "local://signer", "signing"),
    )

    async def test_one_working_key_keeps_the_service(self, health):
        """Vault down, a local envelope key up: the envelope service stays SERVING."""
        vault, local = ProbedBackend(), ProbedBackend()
        vault.outcome = KmsUnavailableError()
        backends = {"vault-transit": vault, "local": local}
        prober = await _start(backends, health, keys=list(self.KEYS))
        try:
            await eventually(lambda: len(prober.results) == 2)
            await eventually(lambda: health.states.get(LOCAL) is True)
            assert health.states[VAULT] is False
            assert ENVELOPE not in health.states, "never changed from SERVING"
        finally:
            await prober.stop()

    async def test_every_key_down_stops_the_service(self, health):
        """Every envelope key on a down backend: that service NOT_SERVING, then back."""
        vault, local = ProbedBackend(), ProbedBackend()
        vault.outcome = KmsUnavailableError()
        backends = {"vault-transit": vault, "local": local}
        keys = [self.KEYS[0], self.KEYS[2]]
        prober = await _start(backends, health, keys=keys)
        try:
            await eventually(lambda: health.states.get(ENVELOPE) is False)
            assert SIGNING not in health.states, "its key is up: untouched"
            vault.outcome = None
            await eventually(lambda: health.states.get(ENVELOPE) is True)
        finally:
            await prober.stop()

    def test_a_key_needs_every_backend_it_wraps_under(self):
        """A multi-wrap key works only while all its members do (encrypt wraps under each)."""
        keys = [
            KeyConfig("dr", "vault-transit://transit/a", also_wrap=("aws-kms://alias/b",)),
            KeyConfig("signer", "local://s", "signing"),
            KeyConfig("mac", "local://m", "hmac"),
        ]
        needs = service_needs(keys)
        assert needs[ENVELOPE] == (frozenset({"vault-transit", "aws-kms"}),)
        assert needs[SIGNING] == (frozenset({"local"}),)
        assert "keybroker.v1.HashingService" not in needs
