"""Plain descriptions of the broker's logical keys, free of protobuf types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["KeyInfo", "KeyVersionInfo"]


@dataclass(frozen=True, slots=True)
class KeyVersionInfo:
    """One version of a key: new envelopes use the current one, old ones keep decrypting."""

    version: int
    state: str
    """``"enabled"`` or ``"disabled"`` (``"unspecified"`` from a daemon that omits it)."""
    created: datetime | None
    """Creation time in UTC, or None when the backend does not report it."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A logical key's metadata as the broker reports it; never key material."""

    name: str
    uri: str
    """Backend key URI, for example ``local://default`` or ``aws-kms://alias/payments``."""
    backend: str
    purpose: str
    """``"envelope"``, ``"signing"``, ``"hmac"``, ``"asymmetric_decrypt"`` or ``"derivation"``."""
    algorithm: str
    current_version: int
    versions: tuple[KeyVersionInfo, ...]
    rotatable: bool
    """False when the backend manages versions itself (for example AWS KMS rotation)."""
