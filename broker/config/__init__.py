"""Configuration: schema, loading (file, environment, seed names), fields and validation."""

from broker.config.load import load_config
from broker.config.schema import (
    AuditConfig,
    CacheConfig,
    Config,
    HashingConfig,
    KeyConfig,
    LoggingConfig,
    ServerConfig,
)
from broker.config.validate import validated_config

__all__ = [
    "AuditConfig",
    "CacheConfig",
    "Config",
    "HashingConfig",
    "KeyConfig",
    "LoggingConfig",
    "ServerConfig",
    "load_config",
    "validated_config",
]
