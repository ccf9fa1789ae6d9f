"""Build a Policy from TOML, with one-line errors naming the field and the fix.

The loader is the only policy module that touches the outside world: it reads files and
resolves user and group names to numbers (NSS), so decisions stay pure.
"""

from __future__ import annotations

import grp
import math
import pwd
import re
import tomllib
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from broker.errors import ConfigError
from broker.policy.authorizer import OPERATIONS
from broker.policy.engine import identify, listener_caller
from broker.policy.model import (
    CALLER_REF_PREFIX,
    RESERVED_ATTRIBUTES,
    SELECTORS,
    SELECTORS_BY_LISTENER,
    SPIFFE_SCHEME,
    Identity,
    Limit,
    Policy,
    Rule,
    name_kind,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

__all__ = [
    "PolicyError",
    "check_callers",
    "listener_patterns",
    "load_policy_file",
    "parse_policy",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# what a bare caller pattern may hold: identity-name characters and glob characters
_BARE = re.compile(r"^[A-Za-z0-9._:*?!\[\]-]{1,64}$")
_UID = re.compile(r"^[0-9*?!\[\]-]+$")
_LISTENER_OF = {s: kind for kind, group in SELECTORS_BY_LISTENER.items() for s in group}
_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_TOP = frozenset({"version", "identities", "rules", "limits"})
_RULE_FIELDS = frozenset({"id", "callers", "keys", "operations", "context", "effect"})
_LIMIT_FIELDS = frozenset({"id", "callers", "keys", "rate", "burst"})
_MAX_RATE = 1e6


class PolicyError(ConfigError):
    """A policy that cannot be used; the old one stays in force on reload."""


def _fail(where: str, field: str, problem: str) -> PolicyError:
    return PolicyError(f"{where}: {field}: {problem}")


def _strings(where: str, field: str, raw: object, *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        raise _fail(where, field, "expected a list of non-empty strings")
    if not raw and not allow_empty:
        raise _fail(where, field, "must not be empty")
    return tuple(raw)


def _unknown(where: str, prefix: str, table: Mapping[str, object], known: frozenset[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        known_list = ", ".join(sorted(known))
        raise _fail(where, f"{prefix}.{extra[0]}", f"unknown setting (known: {known_list})")


def _user(where: str, field: str, raw: object) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return str(raw)
    if isinstance(raw, str):
        try:
            return str(pwd.getpwnam(raw).pw_uid)
        except KeyError:
            raise _fail(where, field, f"no user named {raw!r}; use a uid") from None
    raise _fail(where, field, "expected a user name or uid")


def _group(where: str, field: str, raw: object) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return str(raw)
    if isinstance(raw, str):
        try:
            return str(grp.getgrnam(raw).gr_gid)
        except KeyError:
            raise _fail(where, field, f"no group named {raw!r}; use a gid") from None
    raise _fail(where, field, "expected a group name or gid")


def _selector(where: str, field: str, name: str, raw: object) -> str:
    if name == "uid":
        return _user(where, field, raw)
    if name == "gid":
        return _group(where, field, raw)
    if not isinstance(raw, str) or not raw:
        raise _fail(where, field, "expected a non-empty string")
    if name == "exe" and not raw.startswith("/"):
        raise _fail(where, field, "expected an absolute path to the executable")
    return raw


def _attributes(where: str, field: str, raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise _fail(where, field, "expected a table of string values")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not _ATTR.match(name) or not isinstance(value, str):
            raise _fail(where, f"{field}.{name}", "expected a string value under a plain name")
        if name in RESERVED_ATTRIBUTES:
            raise _fail(where, f"{field}.{name}", "is set by the transport; choose another name")
        out[name] = value
    return out


def _one_listener_kind(where: str, field: str, selectors: Mapping[str, str]) -> None:
    """Refuse an identity no single transport could attest (it would match nobody, or worse)."""
    first, *others = selectors
    for other in others:
        if _LISTENER_OF[other] != _LISTENER_OF[first]:
            kinds = f"{_LISTENER_OF[first]}, {_LISTENER_OF[other]}"
            raise _fail(
                where,
                field,
                f"{first} and {other} are attested by different listeners ({kinds}); "
                "one identity takes the selectors of one listener kind",
            )


def _identity(where: str, name: str, raw: object) -> Identity:
    field = f"identities.{name}"
    if not _ID.match(name):
        raise _fail(where, field, "identity names are 1..64 characters of [A-Za-z0-9._:-]")
    kind = name_kind(name)
    if kind is not None:
        problem = f'names starting with "{kind}:" are the names transports give'
        raise _fail(where, field, f"{problem}; choose another name")
    if not isinstance(raw, Mapping):
        raise _fail(where, field, "expected a table")
    _unknown(where, field, raw, frozenset({*SELECTORS, "attributes"}))
    selectors = {s: _selector(where, f"{field}.{s}", s, raw[s]) for s in SELECTORS if s in raw}
    if not selectors:
        raise _fail(where, field, f"needs at least one of {', '.join(SELECTORS)}")
    _one_listener_kind(where, field, selectors)
    attributes = _attributes(where, f"{field}.attributes", raw.get("attributes", {}))
    return Identity(name, selectors, attributes)


def _typed_problem(pattern: str, kind: str) -> str | None:
    value = pattern[len(kind) + 1 :]
    if not value:
        return f'"{pattern}" needs a value after "{kind}:"'
    if kind == "uid" and not _UID.match(value):
        return (
            f'"{pattern}": uid: takes a number, such as "uid:1001"; '
            f'or define an identity with uid = "{value}"'
        )
    if kind == "spiffe" and not pattern.startswith(SPIFFE_SCHEME):
        hint = value if value.startswith(SPIFFE_SCHEME) else f"{SPIFFE_SCHEME}TRUST-DOMAIN/PATH"
        return f'"{pattern}": write the SPIFFE ID as it is, "{hint}"'
    return None


def _pattern_problem(pattern: str) -> str | None:
    """Why a caller pattern cannot be used, with how to write it; None when it can."""
    kind = name_kind(pattern)
    if kind is not None:
        return _typed_problem(pattern, kind)
    if not _BARE.match(pattern):
        return (
            f'"{pattern}" is not an identity name; '
            f'write "dns:{pattern}" or "cn:{pattern}" for a client certificate'
        )
    return None


def _callers(where: str, field: str, raw: object) -> tuple[str, ...]:
    patterns = _strings(where, field, raw)
    for pattern in patterns:
        problem = _pattern_problem(pattern)
        if problem is not None:
            raise _fail(where, field, problem)
    return patterns


def _context(where: str, field: str, raw: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise _fail(where, field, "expected a table of context names to values")
    out: dict[str, tuple[str, ...]] = {}
    for name, value in raw.items():
        values = _strings(where, f"{field}.{name}", value)
        for v in values:
            ref = v[2:-1] if v.startswith("${") and v.endswith("}") else None
            if ref is not None and not ref.startswith(CALLER_REF_PREFIX):
                raise _fail(where, f"{field}.{name}", "references look like ${caller.ATTRIBUTE}")
        out[name] = values
    return out


def _operations(where: str, field: str, raw: object) -> frozenset[str]:
    ops = frozenset(_strings(where, field, raw))
    unknown = sorted(ops - OPERATIONS - {"*"})
    if unknown:
        known = ", ".join(sorted(OPERATIONS))
        raise _fail(where, field, f"unknown operation {unknown[0]!r} (known: {known}, or *)")
    return ops


def _rule(where: str, index: int, raw: object, seen: set[str]) -> Rule:
    field = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, field, "expected a table")
    _unknown(where, field, raw, _RULE_FIELDS)
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise _fail(where, f"{field}.id", "every rule needs an id of [A-Za-z0-9._:-], 1..64")
    if rule_id in seen:
        raise _fail(where, f"{field}.id", f"duplicate rule id {rule_id!r}")
    seen.add(rule_id)
    effect = raw.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise _fail(where, f"{field}.effect", "must be allow or deny")
    return Rule(
        id=rule_id,
        callers=_callers(where, f"{field}.callers", raw.get("callers")),
        keys=_strings(where, f"{field}.keys", raw.get("keys")),
        operations=_operations(where, f"{field}.operations", raw.get("operations")),
        context=_context(where, f"{field}.context", raw.get("context", {})),
        effect=str(effect),
    )


def _number(where: str, field: str, raw: object, low: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise _fail(where, field, "expected a number")
    if not low <= raw <= _MAX_RATE:
        raise _fail(where, field, f"must be between {low:g} and {_MAX_RATE:g}")
    return float(raw)


def _limit(where: str, index: int, raw: object, seen: set[str]) -> Limit:
    field = f"limits[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, field, "expected a table")
    _unknown(where, field, raw, _LIMIT_FIELDS)
    limit_id = raw.get("id")
    if not isinstance(limit_id, str) or not _ID.match(limit_id) or limit_id in seen:
        raise _fail(where, f"{field}.id", "every limit needs a unique id of [A-Za-z0-9._:-]")
    seen.add(limit_id)
    rate = _number(where, f"{field}.rate", raw.get("rate"), 0.001)
    burst = _number(where, f"{field}.burst", raw.get("burst", max(1.0, math.ceil(rate))), 1)
    keys = raw.get("keys")
    return Limit(
        id=limit_id,
        callers=_callers(where, f"{field}.callers", raw.get("callers")),
        rate=rate,
        burst=int(burst),
        keys=None if keys is None else _strings(where, f"{field}.keys", keys),
    )


def _array(where: str, name: str, raw: object) -> list[object]:
    if not isinstance(raw, list):
        raise _fail(where, name, f"expected an array of tables ([[{name}]])")
    return raw


def parse_policy(data: Mapping[str, object], where: str) -> Policy:
    """Validate a decoded TOML table; PolicyError names the first problem."""
    _unknown(where, "policy", data, _TOP)
    if data.get("version", 1) != 1:
        raise _fail(where, "version", "only version 1 is supported")
    identities = data.get("identities", {})
    if not isinstance(identities, Mapping):
        raise _fail(where, "identities", "expected tables [identities.NAME]")
    rule_ids: set[str] = set()
    limit_ids: set[str] = set()
    rules = _array(where, "rules", data.get("rules", []))
    limits = _array(where, "limits", data.get("limits", []))
    return Policy(
        identities=tuple(_identity(where, n, v) for n, v in identities.items()),
        rules=tuple(_rule(where, i, r, rule_ids) for i, r in enumerate(rules)),
        limits=tuple(_limit(where, i, r, limit_ids) for i, r in enumerate(limits)),
        source=where,
    )


def load_policy_file(path: Path, table: str | None = None) -> Policy:
    """Read a policy file, or the `[table]` of a configuration file."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{where}: policy file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{where}: cannot read the policy ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{where}: not valid TOML: {exc}") from None
    if table is not None:
        section = data.get(table, {})
        if not isinstance(section, Mapping):
            raise PolicyError(f"{where}: [{table}] must be a table")
        data = {k: v for k, v in section.items() if k != "file"}
    return parse_policy(data, where)


def _bare_patterns(policy: Policy) -> Iterator[tuple[str, str]]:
    """(field, pattern) for every caller pattern naming identities or listeners, not `*`."""
    fields = [(f"rules[{i}].callers", rule.callers) for i, rule in enumerate(policy.rules)]
    fields += [(f"limits[{i}].callers", limit.callers) for i, limit in enumerate(policy.limits)]
    for field, patterns in fields:
        for pattern in patterns:
            if pattern != "*" and name_kind(pattern) is None:
                yield field, pattern


def listener_patterns(policy: Policy) -> list[str]:
    """Bare caller patterns no identity of the policy matches: only a unix listener can."""
    names = policy.identity_names
    return [p for _, p in _bare_patterns(policy) if not any(fnmatchcase(n, p) for n in names)]


def check_callers(policy: Policy, listeners: Collection[str]) -> None:
    """Refuse a bare caller name the daemon's unix listeners leave unmatched or ambiguous.

    `listeners` are the identities of the daemon's unix listeners, known at start and to
    `policy check` of a configuration file. A bare name must be a policy identity or one of
    them; it must not be both an identity and a listener whose callers are not that identity.
    """
    names = policy.identity_names
    clashing = sorted(
        x for x in listeners if x in names and identify(policy, listener_caller(x)).name != x
    )
    reachable = names | frozenset(listeners)
    for field, pattern in _bare_patterns(policy):
        clash = next((x for x in clashing if fnmatchcase(x, pattern)), None)
        if clash is not None:
            raise _fail(
                policy.source,
                field,
                f'"{pattern}" names [identities.{clash}], which the callers of the unix '
                f'listener "{clash}" are not; write "listener:{clash}" for them, or rename '
                "the identity",
            )
        if not any(fnmatchcase(n, pattern) for n in reachable):
            raise _fail(
                policy.source,
                field,
                f'"{pattern}" names no identity and no unix listener; write '
                f'"listener:{pattern}" for a unix listener, "dns:{pattern}" or "cn:{pattern}" '
                "for a client certificate",
            )
