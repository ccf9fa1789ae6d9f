"""hvac and requests, imported once on first use; without them, one line names keybroker[vault]."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

from broker.kms._lazy import import_sdk

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["VaultSdk", "sdk"]


class VaultSdk(NamedTuple):
    """The modules of the Vault client the backend uses."""

    hvac: ModuleType
    requests: ModuleType
    requests_adapters: ModuleType


@functools.cache
def sdk() -> VaultSdk:
    """The Vault client modules (cached: imported on first use only)."""
    return VaultSdk(*import_sdk("vault", "hvac", "requests", "requests.adapters"))
