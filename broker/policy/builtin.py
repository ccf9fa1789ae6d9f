"""Policies the daemon uses when none is configured, written out rather than special-cased."""

from __future__ import annotations

from broker.policy.model import Policy, Rule

__all__ = ["DEV_POLICY_TOML", "SOCKET_ACCESS_POLICY"]

# Without a configured policy, a Unix socket's owner, group and mode are the boundary:
# whoever the operating system lets connect may use every key (as before policies existed).
SOCKET_ACCESS_POLICY = Policy(
    rules=(Rule("socket-access", ("*",), ("*",), frozenset({"*"})),),
    source="built-in socket-access policy",
)

DEV_POLICY_TOML = """\
# keybroker development policy, written by `keybroker serve --dev` on first start.
# The dev socket is created 0660 by the user who started the daemon, so the callers of the
# listener `default` are that local user: they may do everything. Edit it freely; the
# daemon reloads it when it changes (or on SIGHUP). See docs/policy.md.
version = 1

[identities.local-user]
listener = "default"

[[rules]]
id = "dev-local-user"
callers = ["local-user"]
keys = ["*"]
operations = ["*"]
"""
