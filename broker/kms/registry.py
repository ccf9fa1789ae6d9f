"""Builds KMS backends from configuration tables: one instance per backend kind.

`[backends.aws]`, `[backends.vault]`, `[backends.gcp]` and `[backends.pkcs11]` map field by
field onto each backend's settings dataclass (unknown fields are refused, naming the field);
an optional nested `[backends.NAME.resilience]` table tunes the shared resilience wrapper.
Vendor modules are imported only when a key uses them.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import TYPE_CHECKING, Any

from broker.errors import ConfigError
from broker.kms.resilience import ResilienceSettings
from broker.kms.resilient_ops import resilient

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.kms.base import KmsBackend

__all__ = ["REMOTE_SCHEMES", "build_remote_backend", "settings_from"]

# URI scheme -> (config table, module, backend class, settings class)
REMOTE_SCHEMES: dict[str, tuple[str, str, str, str]] = {
    "aws-kms": ("aws", "broker.kms.aws", "AwsKmsBackend", "AwsKmsSettings"),
    "vault-transit": ("vault", "broker.kms.vault", "VaultTransitBackend", "VaultSettings"),
    "gcp-kms": ("gcp", "broker.kms.gcp", "GcpKmsBackend", "GcpKmsSettings"),
    "pkcs11": ("pkcs11", "broker.kms.pkcs11", "Pkcs11Backend", "Pkcs11Settings"),
}
_SCALARS = (bool, int, float, str)


def _accepts(annotation: Any, value: object) -> bool:  # noqa: ANN401 - a resolved type hint
    """Whether a TOML value fits a settings field's type (scalars, optionals, literals)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation in _SCALARS:
        return isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool))
    return False


def settings_from(cls: type[Any], raw: Mapping[str, object], where: str) -> Any:  # noqa: ANN401 - any settings dataclass
    """Build a settings dataclass from a config table, naming any wrong field and its fix."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in raw.items():
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}.{name}: unknown setting (known: {known})")
        if not _accepts(hints[name], value):
            raise ConfigError(f"{where}.{name}: expected {_describe(hints[name])}")
    missing = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and n not in raw
    ]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required")
    return cls(**raw)


def _describe(annotation: Any) -> str:  # noqa: ANN401 - a resolved type hint
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = [getattr(a, "__name__", str(a)) for a in (args or (annotation,)) if a is not type(None)]
    return " or ".join(names)


def build_remote_backend(scheme: str, backends: Mapping[str, Mapping[str, object]]) -> KmsBackend:
    """Construct the backend for a URI scheme from `[backends.TABLE]`, wrapped for resilience."""
    table, module_name, class_name, settings_name = REMOTE_SCHEMES[scheme]
    raw = dict(backends.get(table, {}))
    resilience_raw = raw.pop("resilience", {})
    if not isinstance(resilience_raw, dict):
        raise ConfigError(f"backends.{table}.resilience: expected a table")
    module = importlib.import_module(module_name)
    settings = settings_from(getattr(module, settings_name), raw, f"backends.{table}")
    resilience = settings_from(ResilienceSettings, resilience_raw, f"backends.{table}.resilience")
    backend = getattr(module, class_name)(settings)
    return resilient(backend, resilience)
