"""A bounded worker pool for password hashing and PBKDF2, admitted against a memory budget.

An Argon2id hash allocates its whole memory cost (64 MiB by default) while it runs, and a
PBKDF2 derivation holds a core for a tenth of a second; an unbounded flood of either would
exhaust the daemon. Each job is admitted at once or refused at once: a job is admitted
while fewer than `max_jobs` are admitted and the memory they declared still fits the
budget; otherwise it fails with ResourceExhaustedError (RESOURCE_EXHAUSTED), never a queue.
The thread pool has exactly `max_jobs` workers, so an admitted job never waits for a
thread, and a job's memory is released only when its thread finishes, even when the caller
has gone away.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from broker.core.passwords import DEFAULT_PARAMS
from broker.errors import InvalidRequestError, ResourceExhaustedError

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

__all__ = ["WorkLimits", "WorkPool"]

T = TypeVar("T")
_BUSY = "password hashing is at capacity (hashing.memory_budget_bytes); retry later"


@dataclass(frozen=True, slots=True)
class WorkLimits:
    """`[hashing]` settings: 0 concurrent jobs means as many as the budget fits default hashes."""

    max_concurrent: int = 0
    memory_budget_bytes: int = 256 << 20


class WorkPool:
    """Runs CPU- and memory-heavy derivations in threads, admitted without queueing."""

    def __init__(self, limits: WorkLimits) -> None:
        """Size the pool: by default the budget divided by one default Argon2id hash."""
        self.budget = limits.memory_budget_bytes
        fitting = max(1, self.budget // DEFAULT_PARAMS.memory_bytes)
        self.max_jobs = limits.max_concurrent or fitting
        self._executor = ThreadPoolExecutor(self.max_jobs, thread_name_prefix="keybroker-kdf")
        self._lock = threading.Lock()
        self._jobs = 0
        self._bytes = 0

    def _admit(self, memory: int) -> None:
        with self._lock:
            if self._jobs >= self.max_jobs or self._bytes + memory > self.budget:
                raise ResourceExhaustedError(_BUSY)
            self._jobs += 1
            self._bytes += memory

    def _release(self, memory: int) -> None:
        with self._lock:
            self._jobs -= 1
            self._bytes -= memory

    async def run(self, memory: int, fn: Callable[[], T]) -> T:
        """Run fn in a worker if it is admitted now; ResourceExhaustedError if it is not."""
        if memory > self.budget:
            raise InvalidRequestError(
                f"this hash needs {memory} bytes of memory, more than the whole budget of "
                f"{self.budget} (hashing.memory_budget_bytes)"
            )
        self._admit(memory)
        try:
            future: Future[T] = self._executor.submit(fn)
        except BaseException:
            self._release(memory)
            raise
        future.add_done_callback(lambda _: self._release(memory))
        return await asyncio.wrap_future(future)

    def in_use(self) -> tuple[int, int]:
        """(admitted jobs, declared bytes), for metrics and tests."""
        with self._lock:
            return self._jobs, self._bytes

    def close(self) -> None:
        """Stop accepting work; running jobs finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
