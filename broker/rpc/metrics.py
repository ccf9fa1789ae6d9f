"""Per-RPC counters kept by the API layer; exported by broker/daemon/metrics.py."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["RpcMetrics"]


@dataclass
class RpcMetrics:
    """Calls and total seconds per (method, status code); cheap to update on the hot path."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Count one finished call."""
        with self._lock:
            self.calls[(method, code)] += 1
            self.seconds[method] = self.seconds.get(method, 0.0) + seconds

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
        """A consistent copy for exporters."""
        with self._lock:
            return dict(self.calls), dict(self.seconds)
