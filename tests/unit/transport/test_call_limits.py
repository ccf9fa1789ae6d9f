"""RequestBudget and CallLimits: the daemon-wide request memory and each caller's share."""

from __future__ import annotations

from broker.transport.server import CallLimits, RequestBudget

MiB = 1 << 20


class TestRequestBudget:
    """Bytes of requests and replies held at once."""

    def test_over_budget_is_refused_until_released(self) -> None:
        """A reservation over what is left fails at once; a release makes room again."""
        budget = RequestBudget(10 * MiB)
        assert budget.take(6 * MiB)
        assert not budget.take(6 * MiB)
        budget.give(6 * MiB)
        assert budget.take(6 * MiB)

    def test_one_request_larger_than_the_budget_passes_alone(self) -> None:
        """With nothing held, even a request over the whole budget is admitted."""
        budget = RequestBudget(MiB)
        assert budget.take(5 * MiB)
        assert budget.spent
        assert not budget.take(1)

    def test_forced_reservation_counts(self) -> None:
        """A reply's bytes are always reserved and count against new requests."""
        budget = RequestBudget(4 * MiB)
        assert budget.take(3 * MiB)
        assert budget.take(3 * MiB, force=True)
        assert budget.spent
        assert not budget.take(1)


class TestCallLimits:
    """Derived limits."""

    def test_default_share_is_a_quarter_of_the_slots(self) -> None:
        """max_inflight_per_caller 0 gives each caller a quarter of max_concurrent_rpcs."""
        assert CallLimits(max_concurrent_rpcs=1000).caller_share == 250
        assert CallLimits(max_concurrent_rpcs=2).caller_share == 1
        assert CallLimits(max_inflight_per_caller=7).caller_share == 7
