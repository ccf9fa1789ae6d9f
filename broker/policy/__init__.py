"""Caller identities and authorization decisions (pure: no I/O outside the loader)."""

from broker.policy.authorizer import Authorizer, Caller, SocketAccessAuthorizer
from broker.policy.engine import PolicyHolder, decide, identify
from broker.policy.loader import PolicyError, load_policy_file, parse_policy
from broker.policy.model import Decision, Identity, Limit, Policy, Rule

__all__ = [
    "Authorizer",
    "Caller",
    "Decision",
    "Identity",
    "Limit",
    "Policy",
    "PolicyError",
    "PolicyHolder",
    "Rule",
    "SocketAccessAuthorizer",
    "decide",
    "identify",
    "load_policy_file",
    "parse_policy",
]
