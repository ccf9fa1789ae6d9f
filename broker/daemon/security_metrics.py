"""Prometheus families for authorization, rate limits, policy reloads and the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from broker.audit.log import AuditLog
    from broker.rpc.audit_calls import SecurityCounters

__all__ = ["SecurityCollector"]


class SecurityCollector:
    """Reads the security counters when Prometheus scrapes."""

    def __init__(
        self,
        counters: SecurityCounters,
        audit: AuditLog | None,
        reloads: Callable[[], dict[str, int]],
        peercred_refused: Callable[[], dict[str, int]] = dict,
    ) -> None:
        """Export these sources; `reloads` by result, `peercred_refused` by reason."""
        self._counters = counters
        self._audit = audit
        self._reloads = reloads
        self._peercred_refused = peercred_refused

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Yield the metric families."""
        c = self._counters
        decisions = CounterMetricFamily(
            "keybroker_authz_decisions", "Authorization decisions", labels=["decision"]
        )
        decisions.add_metric(["allow"], c.allowed)
        decisions.add_metric(["deny"], c.denied)
        yield decisions
        yield CounterMetricFamily(
            "keybroker_rate_limited", "Operations refused by a rate limit", value=c.rate_limited
        )
        reloads = CounterMetricFamily(
            "keybroker_policy_reloads", "Policy reloads", labels=["result"]
        )
        for result, n in sorted(self._reloads().items()):
            reloads.add_metric([result], n)
        yield reloads
        audit = CounterMetricFamily("keybroker_audit_records", "Audit records", labels=["result"])
        audit.add_metric(["written"], self._audit.written if self._audit else 0)
        audit.add_metric(["failed"], self._audit.failures if self._audit else 0)
        yield audit
        refused = CounterMetricFamily(
            "keybroker_peercred_connections_refused",
            "Connections a peercred listener closed at accept",
            labels=["reason"],
        )
        for reason, n in sorted(self._peercred_refused().items()):
            refused.add_metric([reason], n)
        yield refused
