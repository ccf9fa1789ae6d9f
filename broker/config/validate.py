"""One validation path for configuration, which `serve` and `config check` both take.

`validated_config` runs load_config (file, environment, fields, listeners, policy) and then the
checks the daemon would otherwise make while wiring, before it binds: each `[backends.NAME]`
table that is present, or used by a key or by `[keyring] master_key_uri`, becomes its settings
dataclass (with `[backends.NAME.resilience]`), and each key is checked against what its
backends serve. Nothing here calls a KMS, reads a secret from one or imports a vendor SDK, so
`config check` refuses exactly what `serve` would refuse at start, with the same line.

`config_warnings` lists what is set but will not be read (an unknown or misspelt
`ECL_CRYPTO_*` variable, a seed key variable beside a config file); both commands print it
and go on. `describe_keys` says which backend key each logical key is and where its backend
is, without any secret, for `config check` to show.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from broker.config.env import seed_warnings
from broker.config.load import load_config
from broker.errors import ConfigError
from broker.kms.local.backend import local_key_type
from broker.kms.registry import (
    BACKEND_TABLES,
    LOCAL_SCHEME,
    REMOTE_SCHEMES,
    backend_settings,
    served_purposes,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from broker.config.schema import Config, KeyConfig

__all__ = ["config_warnings", "describe_keys", "local_key_type_of", "validated_config"]

# `[backends.TABLE]` fields that say where a backend is; never credentials
_WHERE: Final = {
    "aws": ("region", "endpoint_url", "profile"),
    "vault": ("address", "namespace", "auth"),
    "gcp": ("endpoint", "credentials_file"),
    "pkcs11": ("module", "token_label"),
}


def validated_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    dev: bool = False,
    state_dir: Path | None = None,
    socket: Path | None = None,
) -> Config:
    """The configuration `serve` runs with, or the one-line ConfigError it would stop with."""
    cfg = load_config(path, env, dev=dev, state_dir=state_dir, socket=socket)
    checked: set[str] = set()
    for _, kc in sorted(cfg.keys.items()):  # the order the daemon wires keys in
        _check_key(kc, cfg.backends, checked)
    keyring_uri = cfg.keyring.master_key_uri
    schemes = [keyring_uri.partition("://")[0]] if keyring_uri else []
    schemes += [BACKEND_TABLES[table] for table in cfg.backends if table in BACKEND_TABLES]
    for scheme in schemes:
        _check_backend(scheme, cfg.backends, checked)
    if cfg.keystore.kind == "postgres":
        from broker.keystore.postgres.settings import (  # noqa: PLC0415 - only fleets
            postgres_settings,
        )

        postgres_settings(cfg.keystore.postgres)
    return cfg


def local_key_type_of(kc: KeyConfig) -> str:
    """The keyring type of a local key, or a ConfigError naming the field that rules it out."""
    try:
        return local_key_type(kc.purpose, kc.algorithm)
    except ValueError as exc:
        field = "algorithm" if kc.algorithm else "purpose"
        raise ConfigError(f"keys.{kc.name}.{field}: {exc}") from None


def _check_key(
    kc: KeyConfig, backends: Mapping[str, Mapping[str, object]], checked: set[str]
) -> None:
    """Refuse a key its backends cannot serve: wrong purpose, local algorithm or backend table."""
    if kc.also_wrap and kc.purpose != "envelope":
        msg = f"keys.{kc.name}.also_wrap: only envelope keys are wrapped by several backends"
        raise ConfigError(msg)
    for uri in (kc.uri, *kc.also_wrap):
        scheme = uri.partition("://")[0]
        if scheme == LOCAL_SCHEME:
            local_key_type_of(kc)
            continue
        _check_backend(scheme, backends, checked)
        served = served_purposes(scheme)
        if kc.purpose not in served:
            listed = ", ".join(served)
            msg = f"keys.{kc.name}.purpose: {scheme}:// keys serve {listed}, not {kc.purpose}"
            raise ConfigError(msg)


def _check_backend(
    scheme: str, backends: Mapping[str, Mapping[str, object]], checked: set[str]
) -> None:
    """Build a remote scheme's settings from its table once, as the daemon does before use."""
    if scheme not in checked:
        backend_settings(scheme, backends)
        checked.add(scheme)


def config_warnings(path: Path | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Lines naming variables that are set but ignored; nothing here stops a start."""
    return seed_warnings(os.environ if env is None else env, config_file=path is not None)


def _backend_of(uri: str, backends: Mapping[str, Mapping[str, object]]) -> str:
    """`backend TABLE` and the non-secret settings that say where it is."""
    scheme = uri.partition("://")[0]
    if scheme == LOCAL_SCHEME:
        return "backend local"
    table = REMOTE_SCHEMES[scheme].table
    settings = backends.get(table, {})
    shown = [f"{f}={settings[f]}" for f in _WHERE.get(table, ()) if settings.get(f) is not None]
    return f"backend {table}" + (f": {', '.join(shown)}" if shown else "")


def describe_keys(cfg: Config) -> list[str]:
    """One line per logical key: purpose, backend key URI and backend, for `config check`."""
    return [
        f"key {name}: {kc.purpose}, {kc.uri} ({_backend_of(kc.uri, cfg.backends)})"
        for name, kc in sorted(cfg.keys.items())
    ]
