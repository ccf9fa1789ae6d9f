"""boto3, imported once on first use; without it, one line says to install keybroker[aws]."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

from broker.kms._lazy import import_sdk

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["AwsSdk", "sdk"]


class AwsSdk(NamedTuple):
    """The modules of the AWS SDK the backend uses."""

    boto3: ModuleType
    botocore_config: ModuleType


@functools.cache
def sdk() -> AwsSdk:
    """The AWS SDK modules (cached: imported on first use only)."""
    return AwsSdk(*import_sdk("aws", "boto3", "botocore.config"))
