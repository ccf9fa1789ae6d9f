"""Background health probes of the KMS backends, and the health names that follow them.

Every `[health] probe_seconds` each backend's `health()` runs in a task of its own (a hung KMS
delays no other backend's probe), cut after `timeout_seconds`. The last result per backend is
kept (`ProbeResult`: up or down, a stable reason word, when, how long) for the metrics, and
what changed is published on every listener's grpc.health.v1 service:

* `keybroker.backend.<scheme>` (`keybroker.backend.vault-transit`): SERVING while the last
  probe passed; NOT_SERVING from start until the first probe passes, and after a failed one.
* A service all of whose calls need a key (`FOLLOWING`) turns NOT_SERVING while none of its
  keys can work, and SERVING again when one can. A key works when every backend it wraps
  under is up (a multi-wrap key encrypts under all its members); a backend not probed yet
  counts as up here, so a service never flaps at start. Every other service keeps its status.
* The overall status "" never follows a backend. It is the daemon's liveness: restarting the
  daemon repairs no KMS, and would drop the DEK cache that keeps cached keys working.

Probes never run on the request path, so no call waits for one. A probe that found all of a
backend's connections taken (`BackendBusyError`) asked no KMS and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from broker.errors import BrokerError
from broker.kms.registry import SCHEMES
from broker.kms.resilience import BackendBusyError
from broker.rpc.gen import asymmetric_pb2, envelope_pb2, signing_pb2
from broker.rpc.spec import service_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from broker.config.schema import HealthConfig, KeyConfig

__all__ = [
    "BACKEND_HEALTH_PREFIX",
    "FOLLOWING",
    "KEYSTORE_HEALTH",
    "BackendProber",
    "HealthCheck",
    "ProbeResult",
    "ProbeSettings",
    "Publish",
    "health_names",
    "prober_for",
    "service_needs",
]

log = structlog.get_logger("keybroker.health")

KEYSTORE_HEALTH = "keybroker.keystore"
BACKEND_HEALTH_PREFIX = "keybroker.backend."
# service -> the key purposes its calls need; the other services answer calls without a key
FOLLOWING: dict[str, tuple[str, ...]] = {
    service_name(envelope_pb2, "EnvelopeService"): ("envelope",),
    service_name(signing_pb2, "SigningService"): ("signing", "asymmetric_decrypt"),
    service_name(asymmetric_pb2, "AsymmetricService"): ("asymmetric_decrypt",),
}
TIMEOUT_REASON = "TIMEOUT"
INTERNAL_REASON = "INTERNAL"


class HealthCheck(Protocol):
    """What the prober needs of a backend."""

    async def health(self) -> None:
        """Raise when the backend cannot serve."""
        ...


class Publish(Protocol):
    """Sets one health name on every listener (BrokerServer.set_health)."""

    def __call__(self, name: str, *, serving: bool) -> Awaitable[None]:
        """Report SERVING or NOT_SERVING for a name."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Seconds between two probes of one backend (0: no probes) and the limit of one probe."""

    interval: float
    timeout: float


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The last probe of one backend; a reason word only, since error text may name hosts."""

    up: bool
    reason: str  # "" when up, else the error's reason word, TIMEOUT or INTERNAL
    at: float  # when the probe ended, in seconds since the epoch
    seconds: float  # how long the probe took


def service_needs(keys: Iterable[KeyConfig]) -> dict[str, tuple[frozenset[str], ...]]:
    """For each service of FOLLOWING: the backends each of its keys wraps under."""
    needs: dict[str, list[frozenset[str]]] = {service: [] for service in FOLLOWING}
    for key in keys:
        schemes = frozenset(uri.partition("://")[0] for uri in (key.uri, *key.also_wrap))
        for service, purposes in FOLLOWING.items():
            if key.purpose in purposes:
                needs[service].append(schemes)
    return {service: tuple(each) for service, each in needs.items()}


def health_names() -> list[tuple[str, str]]:
    """(component, health name) of everything a daemon may report, for `healthcheck --deep`."""
    return [
        ("daemon", ""),
        *((f"backend {scheme}", BACKEND_HEALTH_PREFIX + scheme) for scheme in SCHEMES),
        ("keystore", KEYSTORE_HEALTH),
        *((f"service {service}", service) for service in FOLLOWING),
    ]


def prober_for(
    backends: Mapping[str, HealthCheck], keys: Iterable[KeyConfig], cfg: HealthConfig
) -> BackendProber | None:
    """The prober of a daemon's backends, or None when `[health] probe_seconds` is 0."""
    if cfg.probe_seconds <= 0:
        return None
    settings = ProbeSettings(cfg.probe_seconds, cfg.timeout_seconds)
    return BackendProber(backends, settings, needs=service_needs(keys))


class BackendProber:
    """Probes each backend on its own timer, keeps its last result and publishes changes."""

    def __init__(
        self,
        backends: Mapping[str, HealthCheck],
        settings: ProbeSettings,
        *,
        needs: Mapping[str, Sequence[frozenset[str]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Probe `backends` (scheme -> backend); `needs` comes from service_needs."""
        self._backends = dict(backends)
        self._settings = settings
        self._needs = dict(needs or {})
        self._clock = clock
        self._wall = wall
        self._results: dict[str, ProbeResult] = {}
        # what the health service says now: the server starts every service SERVING
        self._published: dict[str, bool] = dict.fromkeys(self._needs, True)
        self._publish: Publish | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def backends(self) -> tuple[str, ...]:
        """The probed backends' schemes, sorted."""
        return tuple(sorted(self._backends))

    @property
    def results(self) -> Mapping[str, ProbeResult]:
        """The last result of each backend probed so far (read by the metrics)."""
        return types.MappingProxyType(self._results)

    async def start(self, publish: Publish) -> None:
        """Report every backend NOT_SERVING until its first probe, then probe each on a timer."""
        if self._settings.interval <= 0 or not self._backends:
            return
        self._publish = publish
        await self._publish_changes()
        for name, backend in self._backends.items():
            task = asyncio.create_task(self._watch(name, backend), name=f"health-probe-{name}")
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel every timer and running probe, and wait until they ended."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _watch(self, name: str, backend: HealthCheck) -> None:
        """Probe one backend every interval, until cancelled."""
        while True:
            started = self._clock()
            await self._probe(name, backend)
            await asyncio.sleep(max(0.0, self._settings.interval - (self._clock() - started)))

    async def _probe(self, name: str, backend: HealthCheck) -> None:
        """One probe: keep its result, log a change of state, publish what changed."""
        started = self._clock()
        reason = await self._check(name, backend)
        if reason is None:
            return
        took = self._clock() - started
        result = ProbeResult(up=not reason, reason=reason, at=self._wall(), seconds=took)
        previous = self._results.get(name)
        self._results[name] = result
        if previous is None or previous.up != result.up:
            if result.up:
                log.info("backend_up", backend=name, seconds=round(result.seconds, 3))
            else:
                log.warning("backend_down", backend=name, reason=reason)
        await self._publish_changes()

    async def _check(self, name: str, backend: HealthCheck) -> str | None:
        """An empty word when healthy, a reason word when not, None when it could not tell."""
        try:
            async with asyncio.timeout(self._settings.timeout):
                await backend.health()
        except TimeoutError:
            return TIMEOUT_REASON
        except BackendBusyError:
            return None
        except BrokerError as exc:
            return exc.reason
        except Exception:
            previous = self._results.get(name)
            if previous is None or previous.reason != INTERNAL_REASON:
                log.exception("backend_probe_error", backend=name)
            return INTERNAL_REASON
        return ""

    def _states(self) -> dict[str, bool]:
        """Every name this prober sets, and whether it should say SERVING."""
        results = self._results
        states = {
            BACKEND_HEALTH_PREFIX + name: name in results and results[name].up
            for name in self._backends
        }
        for service, keys in self._needs.items():
            if keys:
                states[service] = any(
                    all(results[s].up if s in results else True for s in key) for key in keys
                )
        return states

    async def _publish_changes(self) -> None:
        """Publish the names whose status changed, one publisher at a time so none is stale."""
        if self._publish is None:
            return
        async with self._lock:
            for name, serving in self._states().items():
                if self._published.get(name) != serving:
                    await self._publish(name, serving=serving)
                    self._published[name] = serving
