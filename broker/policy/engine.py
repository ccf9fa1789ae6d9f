"""Policy evaluation: map transport identities to named callers and decide (pure, no I/O).

Decisions: a matching `deny` rule wins over any `allow`; otherwise the first matching `allow`
rule in file order decides; when nothing matches the answer is `default-deny`.
"""

from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from broker.policy.model import CALLER_REF_PREFIX, DEFAULT_DENY, Decision

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from broker.policy.authorizer import Caller
    from broker.policy.model import Identity, Limit, Policy, Rule

__all__ = ["PolicyHolder", "decide", "identify", "matching_limits"]


class PolicyHolder:
    """The policy in force; swapped whole on reload so every decision sees one version."""

    def __init__(self, policy: Policy) -> None:
        """Start with this policy."""
        self.current = policy

    def replace(self, policy: Policy) -> None:
        """Put a new, already validated policy in force."""
        self.current = policy


def _any_glob(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def _selector_matches(name: str, wanted: str, attributes: Mapping[str, str]) -> bool:
    if name == "gid":
        groups = {attributes.get("gid", ""), *attributes.get("groups", "").split(",")}
        return wanted in groups
    if name in ("spiffe_id", "dns", "cn"):
        return fnmatchcase(attributes.get(name, ""), wanted)
    return attributes.get(name) == wanted


def _matches(identity: Identity, attributes: Mapping[str, str]) -> bool:
    return all(_selector_matches(n, v, attributes) for n, v in identity.selectors.items())


def identify(policy: Policy, raw: Caller) -> Caller:
    """The named identity for a transport-attested caller (first match in policy order).

    An unmatched caller keeps the transport's name (`uid:1001`, a SPIFFE ID, a listener
    identity) so rules may still name it; it gets no policy attributes.
    """
    for identity in policy.identities:
        if _matches(identity, raw.attributes):
            merged = {**identity.attributes, **raw.attributes}
            return replace(raw, name=identity.name, attributes=merged)
    return raw


def _context_ok(rule: Rule, caller: Caller, context: Mapping[str, str]) -> bool:
    for name, allowed in rule.context.items():
        value = context.get(name)
        if value is None:
            return False
        if not any(_value_ok(a, value, caller) for a in allowed):
            return False
    return True


def _value_ok(allowed: str, value: str, caller: Caller) -> bool:
    if allowed == "*":
        return True
    if allowed.startswith("${") and allowed.endswith("}"):
        attribute = allowed[2:-1].removeprefix(CALLER_REF_PREFIX)
        own = caller.attributes.get(attribute)
        return own is not None and own == value
    return allowed == value


def _rule_matches(
    rule: Rule, caller: Caller, key: str, operation: str, context: Mapping[str, str]
) -> bool:
    return (
        ("*" in rule.operations or operation in rule.operations)
        and _any_glob(caller.name, rule.callers)
        and _any_glob(key, rule.keys)
        and _context_ok(rule, caller, context)
    )


def decide(
    policy: Policy, caller: Caller, key: str, operation: str, context: Mapping[str, str]
) -> Decision:
    """Deny by default; an explicit deny beats any allow."""
    allow: Rule | None = None
    for rule in policy.rules:
        if not _rule_matches(rule, caller, key, operation, context):
            continue
        if rule.effect == "deny":
            return Decision(allowed=False, rule_id=rule.id)
        if allow is None:
            allow = rule
    if allow is None:
        return Decision(allowed=False, rule_id=DEFAULT_DENY)
    return Decision(allowed=True, rule_id=allow.id)


def matching_limits(policy: Policy, caller: Caller, key: str) -> list[tuple[Limit, str]]:
    """Each limit that applies, with its bucket's scope (the key, or "" for per-caller)."""
    out: list[tuple[Limit, str]] = []
    for limit in policy.limits:
        if not _any_glob(caller.name, limit.callers):
            continue
        if limit.keys is None:
            out.append((limit, ""))
        elif _any_glob(key, limit.keys):
            out.append((limit, key))
    return out
