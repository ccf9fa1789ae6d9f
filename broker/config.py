"""Configuration: TOML file, `KEYBROKER_*` environment overrides and the seed `ECL_CRYPTO_*` names.

Invalid configuration fails at start with one line naming the field and the fix; secret
values (the local master key) never appear in messages or reprs. Field coercion and bounds
live in broker/config_fields.py, the environment variable names in broker/config_env.py.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.config_env import backend_overrides, env_settings, seed_key_uri, seed_master_key
from broker.config_fields import apply_section
from broker.config_keyring import KeyringConfig, check_keyring
from broker.config_security import (
    ListenerConfig,
    PolicyConfig,
    check_secret_file,
    parse_listeners,
    parse_policy_section,
)
from broker.errors import ConfigError

__all__ = [
    "AuditConfig",
    "CacheConfig",
    "Config",
    "HashingConfig",
    "KeyConfig",
    "LoggingConfig",
    "ServerConfig",
    "load_config",
]

DEFAULT_SOCKET = Path("/run/keybroker/keybroker.sock")
DEFAULT_STATE_DIR = Path("/var/lib/keybroker")
DEV_STATE_DIR = Path(".keybroker")
PURPOSES = ("envelope", "signing", "hmac", "asymmetric_decrypt", "derivation")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_URI = re.compile(r"^(local|aws-kms|vault-transit|gcp-kms|pkcs11)://\S+$")
_SUN_PATH_MAX = 107  # bytes a Unix socket path may have on Linux


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where and how the daemon listens."""

    socket: Path = DEFAULT_SOCKET
    state_dir: Path = DEFAULT_STATE_DIR
    grace_seconds: float = 10.0
    max_plaintext_bytes: int = 4 << 20
    max_batch_items: int = 1000
    max_concurrent_rpcs: int = 1000
    allow_root: bool = False


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """DEK cache limits (DESIGN §4); defaults are documented in docs/configuration.md."""

    enabled: bool = True
    decrypt_max_entries: int = 10_000
    decrypt_ttl_seconds: float = 300.0
    encrypt_max_age_seconds: float = 300.0
    encrypt_max_messages: int = 1 << 20
    encrypt_max_bytes: int = 1 << 34
    lease_ttl_seconds: float = 300.0
    lease_max_messages: int = 1 << 20
    lease_max_bytes: int = 1 << 34


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log level and rendering."""

    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus endpoint; empty listen disables it."""

    listen: str = ""


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Audit log (docs/audit.md); an empty file means STATE_DIR/audit.log."""

    enabled: bool = True
    file: str = ""
    stdout: bool = False
    fail_closed: bool = True


@dataclass(frozen=True, slots=True)
class HashingConfig:
    """Password hashing and PBKDF2 work pool; 0 concurrent jobs means budget / 64 MiB."""

    max_concurrent: int = 0
    memory_budget_bytes: int = 256 << 20


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One logical key: its name, backend URI and purpose."""

    name: str
    uri: str
    purpose: str = "envelope"
    algorithm: str = ""
    also_wrap: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """Local backend settings; the master key is a secret and never printed."""

    master_key_hex: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    server: ServerConfig = ServerConfig()
    cache: CacheConfig = CacheConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    local: LocalConfig = LocalConfig()
    keys: Mapping[str, KeyConfig] = field(default_factory=dict)
    backends: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dev: bool = False
    audit: AuditConfig = AuditConfig()
    listeners: tuple[ListenerConfig, ...] = ()
    policy: PolicyConfig | None = None
    hashing: HashingConfig = HashingConfig()
    keyring: KeyringConfig = field(default_factory=KeyringConfig)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "cache": CacheConfig,
    "logging": LoggingConfig,
    "metrics": MetricsConfig,
    "audit": AuditConfig,
    "hashing": HashingConfig,
    "keyring": KeyringConfig,
}
_MAX_ALSO_WRAP = 3


def _key(name: str, raw: object, where: str) -> KeyConfig:
    """Validate one `[keys.NAME]` table."""
    if not _KEY_NAME.match(name):
        raise ConfigError(
            f"keys.{name}: key names are 1..64 characters of [A-Za-z0-9._-] ({where})"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"keys.{name}: expected a table with a `uri` ({where})")
    unknown = set(raw) - {"uri", "purpose", "algorithm", "also_wrap"}
    if unknown:
        raise ConfigError(f"keys.{name}.{min(unknown)}: unknown setting ({where})")
    uri = raw.get("uri")
    if not isinstance(uri, str) or not _URI.match(uri):
        raise ConfigError(
            f"keys.{name}.uri: expected local://NAME, aws-kms://…, vault-transit://MOUNT/NAME, "
            f"gcp-kms://projects/… or pkcs11://TOKEN/LABEL ({where})"
        )
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
            if not isinstance(values, Mapping):
                raise ConfigError(f"{section}: expected a table ({where})")
            cfg = apply_section(cfg, section, values, where)
        elif section == "keys":
            keys = {n: _key(n, v, where) for n, v in dict(values).items()}
            cfg = replace(cfg, keys=keys)
        elif section == "backends":
            cfg = replace(cfg, backends={str(k): dict(v) for k, v in dict(values).items()})
        elif section == "listeners":
            cfg = replace(cfg, listeners=parse_listeners(values, where))
        elif section == "policy":
            cfg = replace(cfg, policy=parse_policy_section(values, path))
        else:
            known = ", ".join([*_SECTIONS, "keys", "backends", "listeners", "policy"])
            raise ConfigError(f"{section}: unknown section (known: {known}) in {where}")
    return cfg


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


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    dev: bool = False,
    state_dir: Path | None = None,
    socket: Path | None = None,
) -> Config:
    """Build the configuration: defaults, dev mode, a file or seed names, env, then CLI flags.

    A `state_dir` given on the command line also moves the socket into it unless a socket is
    named explicitly (flag or KEYBROKER_SOCKET).
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
    if not cfg.keys:
        raise ConfigError(
            "keys: no keys configured; add a [keys.default] table with a uri, "
            "set ECL_CRYPTO_KMS_BACKEND, or run `keybroker serve --dev`"
        )
    if len(os.fsencode(cfg.server.socket.absolute())) > _SUN_PATH_MAX:
        raise ConfigError("server.socket: path longer than 107 bytes; choose a shorter path")
    return cfg
