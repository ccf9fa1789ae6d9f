"""Configuration: TOML file, `KEYBROKER_*` environment overrides and the seed `ECL_CRYPTO_*` names.

Invalid configuration fails at start with one line naming the field and the fix; secret
values (the local master key) never appear in messages or reprs. Field coercion and bounds
live in broker/config/fields.py, the environment variable names in broker/config/env.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.config.keyring import KeyringConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.config.listeners import (
        ListenerConfig,
        PolicyConfig,
    )

__all__ = [
    "AuditConfig",
    "CacheConfig",
    "Config",
    "HashingConfig",
    "HealthConfig",
    "KeyConfig",
    "KeystoreConfig",
    "LocalConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ServerConfig",
]

DEFAULT_SOCKET = Path("/run/keybroker/keybroker.sock")
DEFAULT_STATE_DIR = Path("/var/lib/keybroker")
DEV_STATE_DIR = Path(".keybroker")


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
    max_streams_per_connection: int = 256
    first_message_seconds: float = 10.0
    stream_idle_seconds: float = 30.0
    max_inflight_per_caller: int = 0  # 0: a quarter of max_concurrent_rpcs
    request_memory_bytes: int = 128 << 20


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """DEK cache limits; their meaning and defaults are documented in docs/configuration.md."""

    enabled: bool = True
    decrypt_max_entries: int = 10_000
    decrypt_ttl_seconds: float = 300.0
    decrypt_stale_seconds: float = 0.0
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
    """Audit log (docs/audit.md); an empty file means STATE_DIR/audit.log.

    Checkpoints of the chain's head go to the log stream every `checkpoint_seconds` and at
    stop, and also replace `checkpoint_file` when one is named; 0 seconds turns them off.
    """

    enabled: bool = True
    file: str = ""
    stdout: bool = False
    fail_closed: bool = True
    checkpoint_seconds: float = 60.0
    checkpoint_file: str = ""


@dataclass(frozen=True, slots=True)
class HashingConfig:
    """Password hashing and PBKDF2 work pool; 0 concurrent jobs means budget / 64 MiB."""

    max_concurrent: int = 0
    memory_budget_bytes: int = 256 << 20
    max_share_per_caller: float = 0.5
    max_memory_kib: int = 128 * 1024
    max_time_cost: int = 6
    max_parallelism: int = 8


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Background probes of the KMS backends (docs/operations.md); 0 seconds turns them off."""

    probe_seconds: float = 10.0
    timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One logical key: its name, backend URI and purpose."""

    name: str
    uri: str
    purpose: str = "envelope"
    algorithm: str = ""
    also_wrap: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeystoreConfig:
    """Where key versions are kept (docs/keystore.md); `postgres` holds that kind's settings."""

    kind: str = "file"
    path: str = ""
    postgres: Mapping[str, Any] = field(default_factory=dict)


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
    keystore: KeystoreConfig = field(default_factory=KeystoreConfig)
    health: HealthConfig = HealthConfig()
