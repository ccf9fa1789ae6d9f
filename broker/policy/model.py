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
    "CALLER_REF_PREFIX",
    "DEFAULT_DENY",
    "RESERVED_ATTRIBUTES",
    "SELECTORS",
    "Decision",
    "Identity",
    "Limit",
    "Policy",
    "Rule",
]

DEFAULT_DENY = "default-deny"
CALLER_REF_PREFIX = "caller."
# selectors an identity may be defined by; each names an attribute the transport attests
SELECTORS = ("listener", "uid", "gid", "exe", "spiffe_id", "dns", "cn")
# attributes set by transports; a policy cannot assign them to an identity
RESERVED_ATTRIBUTES = frozenset({*SELECTORS, "groups", "pid", "start_time"})


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


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not, and the id of the rule that decided (`default-deny` when none matched)."""

    allowed: bool
    rule_id: str
