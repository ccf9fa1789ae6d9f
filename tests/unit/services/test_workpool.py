import asyncio
import threading

import pytest

from broker.errors import InvalidRequestError, ResourceExhaustedError
from broker.services.workpool import WorkLimits, WorkPool

MiB = 1 << 20


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


class TestWorkPool:
    """WorkPool: immediate admission or refusal, never a queue."""

    def test_default_size_comes_from_the_budget(self, pool):
        """256 MiB fits four default Argon2id hashes."""
        assert pool.max_jobs == 4

    async def test_runs_a_job(self, pool):
        """An admitted job runs in a worker thread and returns its result."""
        assert await pool.run(64 * MiB, threading.get_ident) != threading.get_ident()
        assert pool.in_use() == (0, 0)

    async def test_over_budget_is_refused_at_once(self, pool):
        """With the budget taken, the next job fails immediately with RESOURCE_EXHAUSTED."""
        gate = threading.Event()
        running = [asyncio.create_task(pool.run(64 * MiB, _blocked(gate))) for _ in range(4)]
        await asyncio.sleep(0)
        assert pool.in_use() == (4, 256 * MiB)
        with pytest.raises(ResourceExhaustedError, match=r"hashing\.memory_budget_bytes"):
            await pool.run(64 * MiB, _blocked(gate))
        gate.set()
        assert await asyncio.gather(*running) == ["done"] * 4
        assert pool.in_use() == (0, 0)

    async def test_memory_is_counted_not_just_jobs(self):
        """Two 100 MiB jobs fit 256 MiB; a third does not, although a thread is free."""
        pool = WorkPool(WorkLimits(max_concurrent=8))
        gate = threading.Event()
        running = [asyncio.create_task(pool.run(100 * MiB, _blocked(gate))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhaustedError):
            await pool.run(100 * MiB, _blocked(gate))
        assert await pool.run(0, lambda: "small") == "small"
        gate.set()
        await asyncio.gather(*running)
        pool.close()

    async def test_memory_stays_taken_until_the_thread_ends(self, pool):
        """A caller that goes away does not free the budget while its job still runs."""
        gate = threading.Event()
        task = asyncio.create_task(pool.run(64 * MiB, _blocked(gate)))
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
            await pool.run(257 * MiB, lambda: None)

    async def test_failures_release(self, pool):
        """A job that raises frees its slot."""

        def boom():
            raise ValueError

        with pytest.raises(ValueError):  # noqa: PT011 - the job's own exception passes through
            await pool.run(64 * MiB, boom)
        assert pool.in_use() == (0, 0)
