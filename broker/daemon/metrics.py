"""Prometheus export: RPC counters and DEK cache counters, read at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from broker.errors import ConfigError
from broker.kms.resilience import ResilientBackend

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from broker.daemon.health import BackendProber
    from broker.daemon.keystore import LocalKeys
    from broker.kms.base import KmsBackend
    from broker.rpc.metrics import RpcMetrics
    from broker.services.deks import DekProvider

__all__ = ["BackendHealthCollector", "BrokerCollector", "KeyStoreCollector", "serve_metrics"]

_MAX_PORT = 65535


class BrokerCollector:
    """Reads counters from the API and the DEK provider when Prometheus scrapes."""

    def __init__(
        self, rpc: RpcMetrics, deks: DekProvider, backends: Mapping[str, KmsBackend]
    ) -> None:
        """Export RPC, DEK cache and per-backend resilience counters."""
        self._rpc = rpc
        self._deks = deks
        self._resilient = {n: b for n, b in backends.items() if isinstance(b, ResilientBackend)}

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield the metric families."""
        calls, seconds = self._rpc.snapshot()
        rpc = CounterMetricFamily("keybroker_rpc", "Finished RPCs", labels=["method", "code"])
        for (method, code), n in sorted(calls.items()):
            rpc.add_metric([method, code], n)
        yield rpc
        dur = CounterMetricFamily("keybroker_rpc_seconds", "Time in RPCs", labels=["method"])
        for method, total in sorted(seconds.items()):
            dur.add_metric([method], total)
        yield dur
        stats = self._deks.stats()
        cache = CounterMetricFamily(
            "keybroker_dek_cache", "DEK cache lookups", labels=["side", "result"]
        )
        cache.add_metric(["encrypt", "hit"], stats.encrypt_hits)
        cache.add_metric(["encrypt", "miss"], stats.encrypt_misses)
        cache.add_metric(["decrypt", "hit"], stats.decrypt_hits)
        cache.add_metric(["decrypt", "miss"], stats.decrypt_misses)
        cache.add_metric(["decrypt", "stale"], stats.decrypt_stale)
        yield cache
        kms = CounterMetricFamily("keybroker_kms_calls", "Calls to KMS backends", labels=["op"])
        kms.add_metric(["generate_data_key"], stats.kms_generate_calls)
        kms.add_metric(["unwrap"], stats.kms_unwrap_calls)
        yield kms
        yield from self._backend_metrics()

    def _backend_metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Circuit state (1 for the current one) and resilience counters per backend."""
        state = GaugeMetricFamily(
            "keybroker_kms_breaker_state", "Circuit breaker state", labels=["backend", "state"]
        )
        events = CounterMetricFamily(
            "keybroker_kms_resilience", "Resilience events", labels=["backend", "event"]
        )
        for name, backend in sorted(self._resilient.items()):
            for candidate in ("closed", "open", "half_open"):
                state.add_metric([name, candidate], float(backend.state == candidate))
            c = backend.counters
            for event in (
                "calls",
                "failures",
                "retries",
                "rejected_open",
                "rejected_rate_limit",
                "rejected_busy",
            ):
                events.add_metric([name, event], getattr(c, event))
        yield state
        yield events


class KeyStoreCollector:
    """The key store's state: whether it answers, and how many changes arrived from others."""

    def __init__(self, keys: LocalKeys) -> None:
        """Read the daemon's store handle at scrape time (it may open after start)."""
        self._keys = keys

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield keybroker_keystore_up and keybroker_keystore_changes_received."""
        store = self._keys.opened
        if store is None:
            return
        up = GaugeMetricFamily(
            "keybroker_keystore_up", "1 when the key store answers, else 0", labels=["kind"]
        )
        up.add_metric([store.kind], float(self._keys.available))
        yield up
        changes = CounterMetricFamily(
            "keybroker_keystore_changes_received", "Key changes other daemons committed"
        )
        changes.add_metric([], self._keys.changes_received)
        yield changes


class BackendHealthCollector:
    """The health prober's last result per backend: whether it passed, and how long it took."""

    def __init__(self, prober: BackendProber) -> None:
        """Read the prober's results at scrape time."""
        self._prober = prober

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield keybroker_backend_up and keybroker_backend_probe_seconds."""
        up = GaugeMetricFamily(
            "keybroker_backend_up",
            "1 when the backend's last health probe passed, else 0 (also before the first)",
            labels=["backend"],
        )
        took = GaugeMetricFamily(
            "keybroker_backend_probe_seconds",
            "Duration of the backend's last health probe",
            labels=["backend"],
        )
        results = self._prober.results
        for name in self._prober.backends:
            result = results.get(name)
            up.add_metric([name], float(result is not None and result.up))
            if result is not None:
                took.add_metric([name], result.seconds)
        yield up
        yield took


def serve_metrics(listen: str) -> CollectorRegistry:
    """Bind /metrics on HOST:PORT (served by a daemon thread); register collectors on the result.

    An address that cannot be bound (in use, not permitted, no such host) is a ConfigError
    naming `metrics.listen`, so `serve` stops with one line and exit code 2.
    """
    host, port = _address(listen)
    registry = CollectorRegistry(auto_describe=True)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        cause = exc.strerror or type(exc).__name__
        raise ConfigError(f"metrics.listen: cannot listen on {listen}: {cause}") from None
    return registry


def _address(listen: str) -> tuple[str, int]:
    """HOST and PORT of HOST:PORT or [V6HOST]:PORT; an empty host means 127.0.0.1."""
    host, _, port = listen.rpartition(":")
    if not (port.isascii() and port.isdigit() and int(port) <= _MAX_PORT):
        raise ConfigError(
            f"metrics.listen: expected HOST:PORT with a port 0..65535 (got {listen!r})"
        )
    return host.strip("[]") or "127.0.0.1", int(port)
