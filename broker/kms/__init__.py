"""KMS backends: the `KmsBackend` protocol and one module per vendor, each SDK imported lazily."""

from broker.kms.base import (
    BackendKey,
    GeneratedKey,
    KeyVersionInfo,
    KmsBackend,
    WrappedKey,
)

__all__ = ["BackendKey", "GeneratedKey", "KeyVersionInfo", "KmsBackend", "WrappedKey"]
