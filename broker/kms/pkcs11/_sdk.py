"""python-pkcs11, imported once on first use; without it, one line names keybroker[hsm]."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

from broker.kms._lazy import import_sdk

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["Pkcs11Sdk", "sdk"]


class Pkcs11Sdk(NamedTuple):
    """The modules of python-pkcs11 the backend uses."""

    pkcs11: ModuleType
    mechanisms: ModuleType
    exceptions: ModuleType


@functools.cache
def sdk() -> Pkcs11Sdk:
    """The python-pkcs11 modules (cached: imported on first use only)."""
    return Pkcs11Sdk(*import_sdk("hsm", "pkcs11", "pkcs11.mechanisms", "pkcs11.exceptions"))
