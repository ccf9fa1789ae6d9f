"""Coercion, bounds and choices of config fields: a file and the environment are checked alike."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from broker.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from _typeshed import DataclassInstance

__all__ = ["apply_section"]

_C = TypeVar("_C", bound="DataclassInstance")
_MAX_PLAINTEXT_CEILING = 64 << 20
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

# (section, field) bounds for numbers: (minimum, maximum)
_BOUNDS: dict[tuple[str, str], tuple[float, float]] = {
    ("server", "grace_seconds"): (0, 600),
    ("server", "max_plaintext_bytes"): (1, _MAX_PLAINTEXT_CEILING),
    ("server", "max_batch_items"): (1, 100_000),
    ("server", "max_concurrent_rpcs"): (1, 100_000),
    ("server", "max_streams_per_connection"): (1, 100_000),
    ("server", "first_message_seconds"): (0.1, 3600),
    ("server", "stream_idle_seconds"): (0.1, 86_400),
    ("server", "max_inflight_per_caller"): (0, 100_000),
    ("server", "request_memory_bytes"): (1 << 20, 1 << 40),
    ("cache", "decrypt_max_entries"): (0, 10_000_000),
    ("cache", "decrypt_ttl_seconds"): (1, 86_400),
    ("cache", "decrypt_stale_seconds"): (0, 86_400),
    ("cache", "encrypt_max_age_seconds"): (1, 86_400),
    ("cache", "encrypt_max_messages"): (1, 2**32),
    ("cache", "encrypt_max_bytes"): (1, 2**50),
    ("cache", "lease_ttl_seconds"): (1, 86_400),
    ("cache", "lease_max_messages"): (1, 2**32),
    ("cache", "lease_max_bytes"): (1, 2**50),
    ("audit", "checkpoint_seconds"): (0, 86_400),
    ("hashing", "max_concurrent"): (0, 256),
    ("hashing", "memory_budget_bytes"): (64 << 20, 1 << 40),
    ("hashing", "max_share_per_caller"): (0.01, 1.0),
    # hash-string maxima: at least the broker's own new hashes, at most what parsing accepts
    ("hashing", "max_memory_kib"): (64 * 1024, 256 * 1024),
    ("hashing", "max_time_cost"): (3, 10),
    ("hashing", "max_parallelism"): (4, 16),
    ("health", "probe_seconds"): (0, 86_400),
    ("health", "timeout_seconds"): (0.1, 300),
}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("logging", "level"): ("debug", "info", "warning", "error"),
    ("logging", "format"): ("json", "console"),
}


def _coerce(section: str, name: str, raw: object, default: object, where: str) -> object:
    """Convert one raw value to the default's type and check bounds, naming `where` on error."""
    label = f"{section}.{name}"
    try:
        if isinstance(default, bool):
            value: object = _to_bool(raw)
        elif isinstance(default, int):
            value = int(str(raw), 0) if isinstance(raw, str) else _int(raw)
        elif isinstance(default, float):
            value = float(raw) if isinstance(raw, (int, float, str)) else _bad()
        elif isinstance(default, Path):
            value = Path(str(raw)).expanduser() if isinstance(raw, (str, Path)) else _bad()
        else:
            value = raw if isinstance(raw, str) else _bad()
    except (TypeError, ValueError):
        kind = type(default).__name__.replace("PosixPath", "path")
        raise ConfigError(f"{label}: expected a {kind} (set in {where})") from None
    bounds = _BOUNDS.get((section, name))
    if bounds and not bounds[0] <= value <= bounds[1]:  # type: ignore[operator]
        lo, hi = (int(b) if float(b).is_integer() else b for b in bounds)
        raise ConfigError(f"{label}: must be between {lo} and {hi} (set in {where})")
    choices = _CHOICES.get((section, name))
    if choices and value not in choices:
        raise ConfigError(f"{label}: must be one of {', '.join(choices)} (set in {where})")
    return value


def _bad() -> object:
    """Reject a raw value of the wrong kind (caught by `_coerce`, which names the field)."""
    raise TypeError


def _int(raw: object) -> int:
    """A whole number from TOML; booleans and fractional floats are not integers here."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or int(raw) != raw:
        raise TypeError
    return int(raw)


def _to_bool(raw: object) -> bool:
    """A boolean, or one of the usual words for it in an environment variable."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise TypeError


def apply_section(cfg: _C, section: str, values: Mapping[str, object], where: str) -> _C:
    """Return cfg with one section's fields replaced, rejecting unknown fields."""
    current = getattr(cfg, section)
    known = {f.name for f in fields(current)}
    for name in values:
        if name not in known:
            raise ConfigError(
                f"{section}.{name}: unknown setting (known: {', '.join(sorted(known))}) in {where}"
            )
    updates = {
        name: _coerce(section, name, raw, getattr(current, name), where)
        for name, raw in values.items()
    }
    return replace(cfg, **{section: replace(current, **updates)})
