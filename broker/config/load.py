"""Configuration: TOML file, `KEYBROKER_*` environment overrides and the seed `ECL_CRYPTO_*` names.

Invalid configuration fails at start with one line naming the field and the fix; secret
values (the local master key) never appear in messages. Field coercion and bounds live in
broker/config/fields.py, the environment variable names in broker/config/env.py.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from broker.config.env import backend_overrides, env_settings, seed_key_uri, seed_master_key
from broker.config.fields import apply_section
from broker.config.keyring import KeyringConfig, check_keyring
from broker.config.listeners import check_secret_file, parse_listeners, parse_policy_section
from broker.config.schema import (
    DEV_STATE_DIR,
    AuditConfig,
    CacheConfig,
    Config,
    HashingConfig,
    HealthConfig,
    KeyConfig,
    KeystoreConfig,
    LocalConfig,
    LoggingConfig,
    MetricsConfig,
    ServerConfig,
)
from broker.core.wire import KEY_NAME_CHARS, KEY_NAME_PATTERN, MAX_KEY_NAME
from broker.errors import ConfigError
from broker.kms.registry import PURPOSES, SCHEMES, describe_uris, uri_pattern
from broker.transport.sockets import SUN_PATH_MAX

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["load_config"]

_URI = uri_pattern(SCHEMES)
_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "cache": CacheConfig,
    "logging": LoggingConfig,
    "metrics": MetricsConfig,
    "audit": AuditConfig,
    "hashing": HashingConfig,
    "keyring": KeyringConfig,
    "health": HealthConfig,
}
_MAX_ALSO_WRAP = 3


def _key(name: str, raw: object, where: str) -> KeyConfig:
    """Validate one `[keys.NAME]` table."""
    if not KEY_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"keys.{name}: key names are 1..{MAX_KEY_NAME} characters of {KEY_NAME_CHARS} ({where})"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"keys.{name}: expected a table with a `uri` ({where})")
    unknown = set(raw) - {"uri", "purpose", "algorithm", "also_wrap"}
    if unknown:
        raise ConfigError(f"keys.{name}.{min(unknown)}: unknown setting ({where})")
    uri = raw.get("uri")
    if not isinstance(uri, str) or not _URI.match(uri):
        raise ConfigError(f"keys.{name}.uri: expected {describe_uris(SCHEMES)} ({where})")
    purpose = raw.get("purpose", "envelope")
    if purpose not in PURPOSES:
        raise ConfigError(f"keys.{name}.purpose: must be one of {', '.join(PURPOSES)} ({where})")
    algorithm = raw.get("algorithm", "")
    if not isinstance(algorithm, str):
        raise ConfigError(f"keys.{name}.algorithm: expected a string ({where})")
    also = raw.get("also_wrap", [])
    if not isinstance(also, list) or not all(isinstance(u, str) and _URI.match(u) for u in also):
        raise ConfigError(f"keys.{name}.also_wrap: expected a list of key URIs ({where})")
    if len(also) > _MAX_ALSO_WRAP:
        raise ConfigError(f"keys.{name}.also_wrap: at most {_MAX_ALSO_WRAP} URIs ({where})")
    return KeyConfig(
        name=name, uri=uri, purpose=str(purpose), algorithm=algorithm, also_wrap=tuple(also)
    )


def _table(label: str, raw: object, where: str) -> Mapping[str, Any]:
    """A TOML table, or one line naming what should have been one."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a table ({where})")
    return raw


def _from_file(cfg: Config, path: Path) -> Config:
    """Overlay a TOML file onto cfg."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    check_secret_file(path, data)
    for section, values in data.items():
        if section in _SECTIONS:
            cfg = apply_section(cfg, section, _table(section, values, where), where)
        elif section == "keys":
            keys = {n: _key(n, v, where) for n, v in _table(section, values, where).items()}
            cfg = replace(cfg, keys=keys)
        elif section == "backends":
            tables = _table(section, values, where).items()
            cfg = replace(
                cfg, backends={n: dict(_table(f"backends.{n}", v, where)) for n, v in tables}
            )
        elif section == "listeners":
            cfg = replace(cfg, listeners=parse_listeners(values, where))
        elif section == "policy":
            cfg = replace(cfg, policy=parse_policy_section(values, path))
        elif section == "keystore":
            cfg = replace(cfg, keystore=_keystore(_table(section, values, where), where))
        else:
            known = ", ".join([*_SECTIONS, "keys", "backends", "listeners", "policy", "keystore"])
            raise ConfigError(f"{section}: unknown section (known: {known}) in {where}")
    return cfg


_KEYSTORE_KINDS = ("file", "postgres")
_KEYSTORE_ENV = {
    "KEYBROKER_KEYSTORE_KIND": "kind",
    "KEYBROKER_KEYSTORE_PATH": "path",
    "KEYBROKER_KEYSTORE_DSN": "dsn",
    "KEYBROKER_KEYSTORE_DSN_FILE": "dsn_file",
}


def _keystore(raw: Mapping[str, object], where: str) -> KeystoreConfig:
    """`[keystore]`: kind and path here; the postgres settings are checked by validate."""
    kind = raw.get("kind", "file")
    if kind not in _KEYSTORE_KINDS:
        raise ConfigError(f"keystore.kind: must be file or postgres ({where})")
    path = raw.get("path", "")
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ConfigError(f"keystore.path: expected an absolute path to the keyring file ({where})")
    rest = {k: v for k, v in raw.items() if k not in ("kind", "path")}
    if kind == "file" and rest:
        raise ConfigError(f"keystore.{min(rest)}: only for kind = postgres ({where})")
    if kind == "postgres" and path:
        raise ConfigError(f"keystore.path: only for kind = file ({where})")
    return KeystoreConfig(kind=str(kind), path=path, postgres=rest)


def _keystore_env(cfg: Config, env: Mapping[str, str]) -> Config:
    """KEYBROKER_KEYSTORE_* override the file's `[keystore]` table, field by field."""
    given = {field: env[var] for var, field in _KEYSTORE_ENV.items() if var in env}
    if not given:
        return cfg
    current = {"kind": cfg.keystore.kind, "path": cfg.keystore.path, **cfg.keystore.postgres}
    merged = {k: v for k, v in {**current, **given}.items() if v != ""}
    if given.get("kind") == "postgres":
        merged.pop("path", None)
    return replace(cfg, keystore=_keystore(merged, "environment"))


def _from_seed(cfg: Config, env: Mapping[str, str]) -> Config:
    """Serve the key named by ECL_CRYPTO_KMS_KEY_ID as logical key `default`."""
    uri = seed_key_uri(env)
    if uri is None:
        return cfg
    keys = dict(cfg.keys)
    keys["default"] = KeyConfig(name="default", uri=uri)
    return replace(cfg, keys=keys)


def _from_env(cfg: Config, env: Mapping[str, str]) -> Config:
    """Apply seed cache names, then KEYBROKER_* overrides (the latter win)."""
    for section, name, raw, var in env_settings(env):
        cfg = apply_section(cfg, section, {name: raw}, var)
    master = seed_master_key(env)
    if master is not None:
        cfg = replace(cfg, local=LocalConfig(master_key_hex=master))
    cfg = _keystore_env(cfg, env)
    return replace(cfg, backends=backend_overrides(cfg.backends, env))


def _dev_defaults(cfg: Config) -> Config:
    """`serve --dev`: state in ./.keybroker, the three dev keys on the local backend."""
    keys = {
        "default": KeyConfig("default", "local://default", "envelope"),
        "signing": KeyConfig("signing", "local://signing", "signing", "ecdsa-p384-sha384"),
        "hmac": KeyConfig("hmac", "local://hmac", "hmac", "hmac-sha256"),
    }
    server = replace(cfg.server, state_dir=DEV_STATE_DIR, socket=DEV_STATE_DIR / "keybroker.sock")
    return replace(cfg, server=server, keys=keys, dev=True)


def load_config(  # noqa: PLR0913 - the command line's options for a start, all keyword
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    dev: bool = False,
    state_dir: Path | None = None,
    socket: Path | None = None,
    keys_required: bool = True,
) -> Config:
    """Build the configuration: defaults, dev mode, a file or seed names, env, then CLI flags.

    A `state_dir` given on the command line also moves the socket into it unless a socket is
    named explicitly (flag or KEYBROKER_SOCKET). Tools that only need the key store (not a
    daemon's keys) pass `keys_required=False`.
    """
    env = os.environ if env is None else env
    cfg = _dev_defaults(Config()) if dev else Config()
    cfg = _from_file(cfg, path) if path is not None else _from_seed(cfg, env)
    cfg = _from_env(cfg, env)
    server = cfg.server
    if state_dir is not None:
        server = replace(server, state_dir=state_dir)
        if socket is None and "KEYBROKER_SOCKET" not in env:
            server = replace(server, socket=state_dir / "keybroker.sock")
    if socket is not None:
        server = replace(server, socket=socket)
    cfg = replace(cfg, server=server)
    check_keyring(cfg.keyring, cfg.local.master_key_hex)
    if not cfg.keys and keys_required:
        raise ConfigError(
            "keys: no keys configured; add a [keys.default] table with a uri, "
            "set ECL_CRYPTO_KMS_BACKEND, or run `keybroker serve --dev`"
        )
    if len(os.fsencode(cfg.server.socket.absolute())) > SUN_PATH_MAX:
        raise ConfigError(
            f"server.socket: path longer than {SUN_PATH_MAX} bytes; choose a shorter path"
        )
    return cfg
