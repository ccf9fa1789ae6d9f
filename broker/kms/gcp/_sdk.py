"""The Cloud KMS SDK, imported once on first use; without it, one line names keybroker[gcp]."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

from broker.kms._lazy import import_sdk

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["GcpSdk", "sdk"]


class GcpSdk(NamedTuple):
    """The modules of the Google SDK the backend uses."""

    kms: ModuleType
    api_exceptions: ModuleType
    auth: ModuleType
    auth_exceptions: ModuleType
    service_account: ModuleType
    crc32c: ModuleType


@functools.cache
def sdk() -> GcpSdk:
    """The Google SDK modules (cached: imported on first use only)."""
    modules = import_sdk(
        "gcp",
        "google.cloud.kms_v1",
        "google.api_core.exceptions",
        "google.auth",
        "google.auth.exceptions",
        "google.oauth2.service_account",
        "google_crc32c",
    )
    return GcpSdk(*modules)
