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
from pathlib import Path

from broker.errors import ConfigError
from broker.policy.authorizer import OPERATIONS
from broker.policy.model import (
    CALLER_REF_PREFIX,
    RESERVED_ATTRIBUTES,
    SELECTORS,
    Identity,
    Limit,
    Policy,
    Rule,
)

__all__ = ["PolicyError", "load_policy_file", "parse_policy"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
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


def _identity(where: str, name: str, raw: object) -> Identity:
    field = f"identities.{name}"
    if not _ID.match(name):
        raise _fail(where, field, "identity names are 1..64 characters of [A-Za-z0-9._:-]")
    if not isinstance(raw, Mapping):
        raise _fail(where, field, "expected a table")
    _unknown(where, field, raw, frozenset({*SELECTORS, "attributes"}))
    selectors = {s: _selector(where, f"{field}.{s}", s, raw[s]) for s in SELECTORS if s in raw}
    if not selectors:
        raise _fail(where, field, f"needs at least one of {', '.join(SELECTORS)}")
    attributes = _attributes(where, f"{field}.attributes", raw.get("attributes", {}))
    return Identity(name, selectors, attributes)


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
        callers=_strings(where, f"{field}.callers", raw.get("callers")),
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
        callers=_strings(where, f"{field}.callers", raw.get("callers")),
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
