import asyncio
import threading

import pytest

from broker.errors import InvalidRequestError, ResourceExhaustedError
from broker.policy.authorizer import Caller
from broker.services.workpool import WorkLimits, WorkPool

MiB = 1 << 20
A, B, C, D = (Caller("listener", name) for name in "abcd")


@pytest.fixture
def pool():
    """A pool with the default 256 MiB budget (four 64 MiB jobs)."""
    p = WorkPool(WorkLimits())
    yield p
    p.close()


def _blocked(gate):
    """A job that waits for the gate, so the test controls when it finishes."""

    def job():
        gate.wait(10)
        return "done"

    return job


def _start(pool, caller, memory, gate):
    """A task running one gated job for the caller."""
    return asyncio.create_task(pool.run(caller, memory, _blocked(gate)))


class TestWorkPool:
    """WorkPool: immediate admission or refusal, never a queue."""

    def test_default_size_comes_from_the_budget(self, pool):
        """256 MiB fits four default Argon2id hashes."""
        assert pool.max_jobs == 4

    async def test_runs_a_job(self, pool):
        """An admitted job runs in a worker thread and returns its result."""
        assert await pool.run(A, 64 * MiB, threading.get_ident) != threading.get_ident()
        assert pool.in_use() == (0, 0)

    async def test_over_budget_is_refused_at_once(self, pool):
        """With the budget taken, the next job fails immediately with RESOURCE_EXHAUSTED."""
        gate = threading.Event()
        running = [_start(pool, caller, 64 * MiB, gate) for caller in (A, A, B, B)]
        await asyncio.sleep(0)
        assert pool.in_use() == (4, 256 * MiB)
        with pytest.raises(ResourceExhaustedError, match=r"hashing\.memory_budget_bytes"):
            await pool.run(C, 64 * MiB, _blocked(gate))
        gate.set()
        assert await asyncio.gather(*running) == ["done"] * 4
        assert pool.in_use() == (0, 0)

    async def test_memory_is_counted_not_just_jobs(self):
        """Two 100 MiB jobs fit 256 MiB; a third does not, although a thread is free."""
        pool = WorkPool(WorkLimits(max_concurrent=8))
        gate = threading.Event()
        running = [_start(pool, caller, 100 * MiB, gate) for caller in (A, B)]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhaustedError):
            await pool.run(C, 100 * MiB, _blocked(gate))
        assert await pool.run(D, 0, lambda: "small") == "small"
        gate.set()
        await asyncio.gather(*running)
        pool.close()

    async def test_memory_stays_taken_until_the_thread_ends(self, pool):
        """A caller that goes away does not free the budget while its job still runs."""
        gate = threading.Event()
        task = _start(pool, A, 64 * MiB, gate)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.in_use() == (1, 64 * MiB)
        gate.set()
        for _ in range(100):
            if pool.in_use() == (0, 0):
                break
            await asyncio.sleep(0.01)
        assert pool.in_use() == (0, 0)

    async def test_job_larger_than_the_budget(self, pool):
        """A job that could never fit is INVALID_ARGUMENT, not a retryable refusal."""
        with pytest.raises(InvalidRequestError, match="more than the whole budget"):
            await pool.run(A, 257 * MiB, lambda: None)

    async def test_failures_release(self, pool):
        """A job that raises frees its slot."""

        def boom():
            raise ValueError

        with pytest.raises(ValueError):  # noqa: PT011 - the job's own exception passes through
            await pool.run(A, 64 * MiB, boom)
        assert pool.in_use() == (0, 0)


class TestCallerShare:
    """One caller holds at most max_share_per_caller of the jobs and of the budget."""

    async def test_share_of_jobs(self, pool):
        """Half of four jobs: a caller's third default hash is refused, another caller's runs."""
        gate = threading.Event()
        running = [_start(pool, A, 64 * MiB, gate) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhaustedError, match=r"hashing\.max_share_per_caller"):
            await pool.run(A, 64 * MiB, _blocked(gate))
        assert await pool.run(B, 64 * MiB, lambda: "served") == "served"
        gate.set()
        assert await asyncio.gather(*running) == ["done"] * 2
        assert pool.in_use(A) == (0, 0)
        assert await pool.run(A, 64 * MiB, lambda: "again") == "again"

    async def test_share_of_memory(self):
        """With eight jobs allowed, a caller holding 128 MiB of 256 gets no more; others do."""
        pool = WorkPool(WorkLimits(max_concurrent=8))
        gate = threading.Event()
        running = _start(pool, A, 128 * MiB, gate)
        await asyncio.sleep(0)
        assert pool.in_use(A) == (1, 128 * MiB)
        with pytest.raises(ResourceExhaustedError, match=r"hashing\.max_share_per_caller"):
            await pool.run(A, 1 * MiB, _blocked(gate))
        assert await pool.run(B, 128 * MiB, lambda: "served") == "served"
        gate.set()
        await running
        pool.close()

    async def test_share_fits_one_largest_job(self):
        """A 64 MiB budget halved would fit no default hash; min_caller_bytes keeps one."""
        pool = WorkPool(WorkLimits(memory_budget_bytes=64 * MiB, min_caller_bytes=64 * MiB))
        assert await pool.run(A, 64 * MiB, lambda: "served") == "served"
        pool.close()

    async def test_job_larger_than_a_share(self):
        """A job no caller may ever hold is INVALID_ARGUMENT naming the share."""
        pool = WorkPool(WorkLimits(max_share_per_caller=0.25))
        with pytest.raises(InvalidRequestError, match=r"hashing\.max_share_per_caller"):
            await pool.run(A, 100 * MiB, lambda: None)
        assert pool.in_use() == (0, 0)
        pool.close()

    async def test_whole_pool_with_a_full_share(self):
        """With max_share_per_caller = 1 one caller may fill the whole pool."""
        pool = WorkPool(WorkLimits(max_share_per_caller=1.0))
        gate = threading.Event()
        running = [_start(pool, A, 64 * MiB, gate) for _ in range(4)]
        await asyncio.sleep(0)
        assert pool.in_use(A) == (4, 256 * MiB)
        gate.set()
        await asyncio.gather(*running)
        pool.close()
