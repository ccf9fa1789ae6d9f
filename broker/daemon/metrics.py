"""Prometheus export: RPC counters and DEK cache counters, read at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from broker.kms.resilience import ResilientBackend

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from prometheus_client.registry import Collector

    from broker.daemon.keystore import LocalKeys
    from broker.kms.base import KmsBackend
    from broker.rpc.metrics import RpcMetrics
    from broker.services.deks import DekProvider

__all__ = ["BrokerCollector", "KeyStoreCollector", "serve_metrics"]


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


def serve_metrics(listen: str, collector: Collector) -> CollectorRegistry:
    """Start the /metrics HTTP endpoint on HOST:PORT in a daemon thread."""
    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    return registry
