"""Caller identities and authorization decisions (pure: no I/O)."""

from broker.policy.authorizer import Authorizer, Caller, SocketAccessAuthorizer

__all__ = ["Authorizer", "Caller", "SocketAccessAuthorizer"]
