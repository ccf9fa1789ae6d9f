"""A bounded worker pool for password hashing and PBKDF2, admitted against a memory budget.

An Argon2id hash allocates its whole memory cost (64 MiB by default) while it runs, and a
PBKDF2 derivation holds a core for a tenth of a second; an unbounded flood of either would
exhaust the daemon. Each job is admitted at once or refused at once: a job is admitted
while fewer than `max_jobs` are admitted and the memory they declared still fits the
budget; otherwise it fails with ResourceExhaustedError (RESOURCE_EXHAUSTED), never a queue.
The thread pool has exactly `max_jobs` workers, so an admitted job never waits for a
thread, and the jobs run at the same time. A job's memory is released only when its thread
finishes, even when the caller has gone away.

One caller may hold at most a share of the pool (`max_share_per_caller` of the jobs and of
the budget), so a caller flooding costly jobs leaves the rest to the others. The memory
share is never smaller than `min_caller_bytes` (one hash of the largest accepted cost), so
every caller can run any job the service accepts.
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

    from broker.policy.authorizer import Caller

__all__ = ["WorkLimits", "WorkPool"]

T = TypeVar("T")
_BUSY = "password hashing is at capacity (hashing.memory_budget_bytes); retry later"
_CALLER_BUSY = (
    "this caller holds its share of password hashing (hashing.max_share_per_caller); retry later"
)


@dataclass(frozen=True, slots=True)
class WorkLimits:
    """`[hashing]` settings: 0 concurrent jobs means as many as the budget fits default hashes.

    `min_caller_bytes` is the memory share a caller keeps however small the fraction makes it.
    """

    max_concurrent: int = 0
    memory_budget_bytes: int = 256 << 20
    max_share_per_caller: float = 0.5
    min_caller_bytes: int = 0


class WorkPool:
    """Runs CPU- and memory-heavy derivations in threads, admitted without queueing."""

    def __init__(self, limits: WorkLimits) -> None:
        """Size the pool: by default the budget divided by one default Argon2id hash."""
        self.budget = limits.memory_budget_bytes
        fitting = max(1, self.budget // DEFAULT_PARAMS.memory_bytes)
        self.max_jobs = limits.max_concurrent or fitting
        share = limits.max_share_per_caller
        self.caller_jobs = max(1, int(self.max_jobs * share))
        self.caller_bytes = min(self.budget, max(int(self.budget * share), limits.min_caller_bytes))
        self._executor = ThreadPoolExecutor(self.max_jobs, thread_name_prefix="keybroker-kdf")
        self._lock = threading.Lock()
        self._jobs = 0
        self._bytes = 0
        self._held: dict[tuple[str, str], tuple[int, int]] = {}  # caller -> (jobs, bytes)

    def _check_size(self, memory: int) -> None:
        """Refuse a job that could never be admitted, naming the setting that forbids it."""
        if memory > self.budget:
            raise InvalidRequestError(
                f"this hash needs {memory} bytes of memory, more than the whole budget of "
                f"{self.budget} (hashing.memory_budget_bytes)"
            )
        if memory > self.caller_bytes:
            raise InvalidRequestError(
                f"this hash needs {memory} bytes of memory, more than one caller may hold "
                f"({self.caller_bytes}, hashing.max_share_per_caller)"
            )

    def _admit(self, owner: tuple[str, str], memory: int) -> None:
        with self._lock:
            jobs, held = self._held.get(owner, (0, 0))
            if jobs >= self.caller_jobs or held + memory > self.caller_bytes:
                raise ResourceExhaustedError(_CALLER_BUSY)
            if self._jobs >= self.max_jobs or self._bytes + memory > self.budget:
                raise ResourceExhaustedError(_BUSY)
            self._held[owner] = (jobs + 1, held + memory)
            self._jobs += 1
            self._bytes += memory

    def _release(self, owner: tuple[str, str], memory: int) -> None:
        with self._lock:
            jobs, held = self._held.pop(owner)
            if jobs > 1:
                self._held[owner] = (jobs - 1, held - memory)
            self._jobs -= 1
            self._bytes -= memory

    async def run(self, caller: Caller, memory: int, fn: Callable[[], T]) -> T:
        """Run fn in a worker if it is admitted now; ResourceExhaustedError if it is not."""
        self._check_size(memory)
        owner = (caller.kind, caller.name)
        self._admit(owner, memory)
        try:
            future: Future[T] = self._executor.submit(fn)
        except BaseException:
            self._release(owner, memory)
            raise
        future.add_done_callback(lambda _: self._release(owner, memory))
        return await asyncio.wrap_future(future)

    def in_use(self, caller: Caller | None = None) -> tuple[int, int]:
        """(admitted jobs, declared bytes) of the pool or of one caller, for metrics and tests."""
        with self._lock:
            if caller is None:
                return self._jobs, self._bytes
            return self._held.get((caller.kind, caller.name), (0, 0))

    def close(self) -> None:
        """Stop accepting work; running jobs finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
