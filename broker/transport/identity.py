"""Identity resolvers for listeners with a fixed identity, and the policy mapping they share.

Every resolver attests what its transport proves (a listener name, kernel credentials, a
client certificate) as a raw Caller, then maps it through the policy in force to a named
identity with attributes (broker/policy/engine.py: identify).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.policy.engine import identify, listener_caller

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.policy.engine import PolicyHolder
    from broker.rpc.calls import Context

__all__ = ["ListenerIdentity"]


class ListenerIdentity:
    """Every caller of this listener is the listener's configured identity (sidecar sockets).

    Unless a policy identity selects it, the caller is named `listener:NAME`, a name no
    certificate or peer credential can take.
    """

    def __init__(self, name: str, policy: PolicyHolder) -> None:
        """Bind the listener's identity name."""
        self._raw = listener_caller(name)
        self._policy = policy

    def __call__(self, context: Context) -> Caller:
        """The listener's caller, mapped through the policy in force."""
        del context
        return identify(self._policy.current, self._raw)
