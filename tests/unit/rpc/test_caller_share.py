"""CallerShare: each caller holds at most its share of a listener's calls."""

from __future__ import annotations

import pytest

from broker.errors import ResourceExhaustedError
from broker.policy.authorizer import Caller
from broker.rpc.calls import OVER_SHARE, CallerShare

A = Caller("listener", "listener:a")
B = Caller("listener", "listener:b")


class TestCallerShare:
    """One caller's calls in progress on a listener, capped."""

    def test_over_share_is_refused_while_another_caller_proceeds(self) -> None:
        """The caller at its cap is refused with a fixed message; another caller is not."""
        share = CallerShare(2)
        with share.hold(A), share.hold(A):
            with pytest.raises(ResourceExhaustedError) as info, share.hold(A):
                pass
            assert info.value.message == OVER_SHARE
            with share.hold(B):
                pass

    def test_finished_calls_free_their_share(self) -> None:
        """A call that ended, even by an error, no longer counts."""
        share = CallerShare(1)
        with pytest.raises(ValueError, match="boom"), share.hold(A):
            raise ValueError("boom")
        with share.hold(A):
            pass

    def test_zero_means_no_cap(self) -> None:
        """A cap of 0 lets a caller hold any number of calls."""
        share = CallerShare(0)
        with share.hold(A), share.hold(A), share.hold(A):
            pass
