"""The policy's data: identities, rules, rate limits and the decision a policy reaches.

Pure values with no behaviour beyond matching helpers; the loader builds them from TOML and
the engine evaluates them. Identity selectors and rule patterns are plain strings so a policy
prints and compares exactly as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CALLER_KINDS",
    "CALLER_REF_PREFIX",
    "DEFAULT_DENY",
    "NAME_KINDS",
    "RESERVED_ATTRIBUTES",
    "SELECTORS",
    "SELECTORS_BY_LISTENER",
    "SPIFFE_SCHEME",
    "Decision",
    "Identity",
    "Limit",
    "Policy",
    "Rule",
    "name_kind",
    "transport_name",
]

DEFAULT_DENY = "default-deny"
CALLER_REF_PREFIX = "caller."
# the selectors an identity may be defined by, by the kind of listener that attests them; an
# identity takes the selectors of one listener kind, so it matches callers of that kind only
SELECTORS_BY_LISTENER: Mapping[str, tuple[str, ...]] = {
    "unix": ("listener",),
    "peercred": ("uid", "gid", "exe"),
    "tcp": ("spiffe_id", "dns", "cn"),
}
SELECTORS = tuple(s for group in SELECTORS_BY_LISTENER.values() for s in group)
# attributes set by transports; a policy cannot assign them to an identity
RESERVED_ATTRIBUTES = frozenset({*SELECTORS, "groups", "pid", "start_time"})
# Caller.kind as each transport sets it -> the kind of listener that attested the caller
CALLER_KINDS: Mapping[str, str] = {
    "listener": "unix",
    "peercred": "peercred",
    "spiffe": "tcp",
    "dns": "tcp",
    "cn": "tcp",
}
# the prefixes of the names transports give callers no identity matches (`cn:ops`, `uid:0`,
# and a SPIFFE ID as it is, its scheme being its kind); identity names never start with one,
# so no caller can take another kind's name
NAME_KINDS = frozenset({"listener", "uid", "spiffe", "dns", "cn"})
SPIFFE_SCHEME = "spiffe://"


def transport_name(kind: str, value: str) -> str:
    """The typed name a transport gives a caller, so no value can pass for another kind."""
    if kind == "spiffe" and value.startswith(SPIFFE_SCHEME):
        return value
    return f"{kind}:{value}"


def name_kind(name: str) -> str | None:
    """The transport kind a caller name or pattern is typed with; None for identity names."""
    kind, sep, _ = name.partition(":")
    return kind if sep and kind in NAME_KINDS else None


@dataclass(frozen=True, slots=True)
class Identity:
    """A named identity: the transport attributes that define it and the attributes it gets."""

    name: str
    selectors: Mapping[str, str]
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rule:
    """Which callers may use which keys for which operations, maybe only in some contexts.

    `context` maps a context name to a literal value, `*` (present with any value) or
    `${caller.ATTR}` (equal to the caller's attribute); a tuple means any of those values.
    """

    id: str
    callers: tuple[str, ...]
    keys: tuple[str, ...]
    operations: frozenset[str]
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    effect: str = "allow"


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket per caller (or per caller and key when `keys` is set)."""

    id: str
    callers: tuple[str, ...]
    rate: float
    burst: int
    keys: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole policy, as loaded from one source."""

    identities: tuple[Identity, ...] = ()
    rules: tuple[Rule, ...] = ()
    limits: tuple[Limit, ...] = ()
    source: str = ""
    identity_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Index the identity names once: every decision asks whether a name is one."""
        object.__setattr__(self, "identity_names", frozenset(i.name for i in self.identities))


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not, and the id of the rule that decided (`default-deny` when none matched)."""

    allowed: bool
    rule_id: str
