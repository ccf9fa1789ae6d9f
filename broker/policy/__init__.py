"""Caller identities and authorization decisions (pure: I/O only in the loader and source)."""

from broker.policy.authorizer import Authorizer, Caller, SocketAccessAuthorizer
from broker.policy.engine import PolicyHolder, decide, identify
from broker.policy.loader import PolicyError, load_policy_file, parse_policy
from broker.policy.model import Decision, Identity, Limit, Policy, Rule
from broker.policy.source import PolicySource

__all__ = [
    "Authorizer",
    "Caller",
    "Decision",
    "Identity",
    "Limit",
    "Policy",
    "PolicyError",
    "PolicyHolder",
    "PolicySource",
    "Rule",
    "SocketAccessAuthorizer",
    "decide",
    "identify",
    "load_policy_file",
    "parse_policy",
]
