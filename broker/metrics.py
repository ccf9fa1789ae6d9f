"""Prometheus export: RPC counters and DEK cache counters, read at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.registry import Collector

    from broker.api.metrics import RpcMetrics
    from broker.services.deks import DekProvider

__all__ = ["BrokerCollector", "serve_metrics"]


class BrokerCollector:
    """Reads counters from the API and the DEK provider when Prometheus scrapes."""

    def __init__(self, rpc: RpcMetrics, deks: DekProvider) -> None:
        """Export these two sources."""
        self._rpc = rpc
        self._deks = deks

    def collect(self) -> Iterator[CounterMetricFamily]:
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
        yield cache
        kms = CounterMetricFamily("keybroker_kms_calls", "Calls to KMS backends", labels=["op"])
        kms.add_metric(["generate_data_key"], stats.kms_generate_calls)
        kms.add_metric(["unwrap"], stats.kms_unwrap_calls)
        yield kms


def serve_metrics(listen: str, collector: Collector) -> CollectorRegistry:
    """Start the /metrics HTTP endpoint on HOST:PORT in a daemon thread."""
    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    return registry
