"""Policy evaluation: map transport identities to named callers and decide (pure, no I/O).

Caller names are of two sorts. A policy identity has the bare name the policy gives it. A
caller no identity matches keeps the typed name its transport gave it: `listener:NAME`,
`uid:N`, `dns:NAME`, `cn:NAME`, or its SPIFFE ID (`spiffe://…`, typed by its scheme). A rule's
caller pattern `*` matches everyone; a typed pattern matches names of its own kind only; a
bare pattern matches identity names and, as unix listeners were named before names were
typed, a listener's identity when the policy has no identity of that name. So no certificate
can reach a listener's or a uid's rules.

Decisions: a matching `deny` rule wins over any `allow`; otherwise the first matching `allow`
rule in file order decides; when nothing matches the answer is `default-deny`.
"""

from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from broker.policy.authorizer import Caller
from broker.policy.model import (
    CALLER_KINDS,
    CALLER_REF_PREFIX,
    DEFAULT_DENY,
    SELECTORS_BY_LISTENER,
    Decision,
    name_kind,
    transport_name,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from broker.policy.model import Identity, Limit, Policy, Rule

__all__ = ["PolicyHolder", "decide", "identify", "listener_caller", "matching_limits"]

_LISTENER = "listener"
# Caller.kind -> the selectors an identity may use to match callers of that kind
_USABLE = {
    kind: frozenset(SELECTORS_BY_LISTENER[listener]) for kind, listener in CALLER_KINDS.items()
}


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


def _bare_name(name: str, identity_names: frozenset[str]) -> str | None:
    """The name bare patterns see: an identity's, or an unclaimed listener identity; else None."""
    kind = name_kind(name)
    if kind is None:
        return name
    if kind == _LISTENER:
        listener = name[len(_LISTENER) + 1 :]
        return None if listener in identity_names else listener
    return None


def listener_caller(identity: str) -> Caller:
    """The raw caller of a unix listener with this identity, as its resolver attests it."""
    return Caller(
        kind=_LISTENER, name=transport_name(_LISTENER, identity), attributes={_LISTENER: identity}
    )


def _named(patterns: Iterable[str], name: str, bare: str | None) -> bool:
    """Whether caller patterns name this caller; `bare` is what bare patterns may match."""
    for pattern in patterns:
        if pattern == "*":
            return True
        if name_kind(pattern) is not None:
            if fnmatchcase(name, pattern):
                return True
        elif bare is not None and fnmatchcase(bare, pattern):
            return True
    return False


def _selector_matches(name: str, wanted: str, attributes: Mapping[str, str]) -> bool:
    value = attributes.get(name)
    if value is None:
        return False
    if name == "gid":
        return wanted in {value, *attributes.get("groups", "").split(",")}
    if name in ("spiffe_id", "dns", "cn"):
        return fnmatchcase(value, wanted)
    return value == wanted


def _matches(identity: Identity, attributes: Mapping[str, str]) -> bool:
    return all(_selector_matches(n, v, attributes) for n, v in identity.selectors.items())


def identify(policy: Policy, raw: Caller) -> Caller:
    """The named identity for a transport-attested caller (first match in policy order).

    Only identities whose selectors the caller's kind of listener attests are tried, so a
    certificate never becomes a peercred or listener identity, nor the reverse. An unmatched
    caller keeps the transport's typed name and gets no policy attributes.
    """
    usable = _USABLE.get(raw.kind, frozenset())
    for identity in policy.identities:
        if identity.selectors.keys() <= usable and _matches(identity, raw.attributes):
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
    """Everything but the caller's name, which decide() checks with the bare name found once."""
    return (
        ("*" in rule.operations or operation in rule.operations)
        and _any_glob(key, rule.keys)
        and _context_ok(rule, caller, context)
    )


def decide(
    policy: Policy, caller: Caller, key: str, operation: str, context: Mapping[str, str]
) -> Decision:
    """Deny by default; an explicit deny beats any allow."""
    allow: Rule | None = None
    bare = _bare_name(caller.name, policy.identity_names)
    for rule in policy.rules:
        if not _named(rule.callers, caller.name, bare):
            continue
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
    bare = _bare_name(caller.name, policy.identity_names)
    for limit in policy.limits:
        if not _named(limit.callers, caller.name, bare):
            continue
        if limit.keys is None:
            out.append((limit, ""))
        elif _any_glob(key, limit.keys):
            out.append((limit, key))
    return out
