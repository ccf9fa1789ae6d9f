"""The vocabulary of key URIs and purposes, and the builder of remote backends from config.

Every URI scheme a key may name is here (`SCHEMES`: `local` plus `REMOTE_SCHEMES`), with every
key purpose (`PURPOSES`) and the protocol a backend needs to serve it; configuration derives its
patterns and messages from these. `[backends.aws]`, `[backends.vault]`, `[backends.gcp]` and
`[backends.pkcs11]` map field by field onto each backend's settings dataclass (unknown fields
are refused, naming the field); an optional nested `[backends.NAME.resilience]` table tunes the
shared resilience wrapper. Settings classes come from each vendor's `settings` module, which
imports no SDK, so a table is checked without the vendor's extra; the backend module is loaded
only to build a backend or to learn which purposes it serves.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import types
import typing
from typing import TYPE_CHECKING, Any, NamedTuple

from broker.errors import ConfigError
from broker.kms.base import DecryptionBackend, MacBackend, SecretBackend, SigningBackend
from broker.kms.resilience import ResilienceSettings
from broker.kms.resilient_ops import resilient

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from broker.kms.base import KmsBackend

__all__ = [
    "BACKEND_TABLES",
    "LOCAL_SCHEME",
    "PURPOSES",
    "REMOTE_SCHEMES",
    "SCHEMES",
    "URI_FORMS",
    "RemoteScheme",
    "backend_settings",
    "build_remote_backend",
    "describe_uris",
    "served_purposes",
    "settings_from",
    "uri_pattern",
]


class RemoteScheme(NamedTuple):
    """Where a remote URI scheme is configured and implemented."""

    table: str  # its configuration table, `[backends.TABLE]`
    package: str  # the vendor package: PACKAGE.backend and PACKAGE.settings
    backend: str  # the backend class, in PACKAGE.backend
    settings: str  # the settings dataclass, in PACKAGE.settings


LOCAL_SCHEME = "local"
REMOTE_SCHEMES: dict[str, RemoteScheme] = {
    "aws-kms": RemoteScheme("aws", "broker.kms.aws", "AwsKmsBackend", "AwsKmsSettings"),
    "vault-transit": RemoteScheme(
        "vault", "broker.kms.vault", "VaultTransitBackend", "VaultSettings"
    ),
    "gcp-kms": RemoteScheme("gcp", "broker.kms.gcp", "GcpKmsBackend", "GcpKmsSettings"),
    "pkcs11": RemoteScheme("pkcs11", "broker.kms.pkcs11", "Pkcs11Backend", "Pkcs11Settings"),
}
SCHEMES = (LOCAL_SCHEME, *REMOTE_SCHEMES)
# `[backends.TABLE]` name -> the URI scheme it configures
BACKEND_TABLES = {spec.table: scheme for scheme, spec in REMOTE_SCHEMES.items()}
# URI scheme -> how its URIs look, for messages; one entry per scheme of SCHEMES
URI_FORMS = {
    LOCAL_SCHEME: "local://NAME",
    "aws-kms": "aws-kms://…",
    "vault-transit": "vault-transit://MOUNT/NAME",
    "gcp-kms": "gcp-kms://projects/…",
    "pkcs11": "pkcs11://TOKEN/LABEL",
}
# key purpose -> the protocol a backend needs to serve it (envelope: every backend)
_PURPOSE_PROTOCOLS: dict[str, type | None] = {
    "envelope": None,
    "signing": SigningBackend,
    "hmac": MacBackend,
    "asymmetric_decrypt": DecryptionBackend,
    "derivation": SecretBackend,
}
PURPOSES = tuple(_PURPOSE_PROTOCOLS)
_SCALARS = (bool, int, float, str)


def uri_pattern(schemes: Iterable[str]) -> re.Pattern[str]:
    """A pattern for key URIs of exactly these schemes, so config accepts what a backend serves."""
    return re.compile(rf"^({'|'.join(map(re.escape, schemes))})://\S+$")


def describe_uris(schemes: Iterable[str]) -> str:
    """The URI forms of these schemes as "a, b or c", so messages list what is accepted."""
    *first, last = (URI_FORMS[scheme] for scheme in schemes)
    return f"{', '.join(first)} or {last}" if first else last


def served_purposes(scheme: str) -> tuple[str, ...]:
    """The purposes keys of a scheme may have: what its backend class implements, in order."""
    if scheme == LOCAL_SCHEME:
        return PURPOSES
    cls = _backend_class(scheme)
    return tuple(
        p for p, need in _PURPOSE_PROTOCOLS.items() if need is None or issubclass(cls, need)
    )


def _backend_class(scheme: str) -> type[Any]:
    """A remote scheme's backend class; its module loads the vendor SDK only when it is used."""
    spec = REMOTE_SCHEMES[scheme]
    return typing.cast(
        "type[Any]", getattr(importlib.import_module(f"{spec.package}.backend"), spec.backend)
    )


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


def backend_settings(
    scheme: str, backends: Mapping[str, Mapping[str, object]]
) -> tuple[Any, ResilienceSettings]:
    """The checked settings and resilience settings of a remote scheme's `[backends.TABLE]`."""
    spec = REMOTE_SCHEMES[scheme]
    raw = dict(backends.get(spec.table, {}))
    resilience_raw = raw.pop("resilience", {})
    if not isinstance(resilience_raw, dict):
        raise ConfigError(f"backends.{spec.table}.resilience: expected a table")
    cls = getattr(importlib.import_module(f"{spec.package}.settings"), spec.settings)
    settings = settings_from(cls, raw, f"backends.{spec.table}")
    where = f"backends.{spec.table}.resilience"
    return settings, settings_from(ResilienceSettings, resilience_raw, where)


def build_remote_backend(scheme: str, backends: Mapping[str, Mapping[str, object]]) -> KmsBackend:
    """Construct the backend for a URI scheme from `[backends.TABLE]`, wrapped for resilience."""
    settings, resilience = backend_settings(scheme, backends)
    return resilient(_backend_class(scheme)(settings), resilience)
