"""The seed's token generation: random tokens from the local ``secrets`` module.

``length`` is the entropy in bytes, 16 to 1024, the bounds the broker's TokenService
enforces, so moving a call between the two never changes what is accepted (the seed warns
against fewer than 16 bytes; here that is an ``InvalidParameterError``).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Final, TypeVar

from ._util import invalid
from .exceptions import TokenGenerationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_TOKEN_BYTES",
    "MIN_TOKEN_BYTES",
    "generate_token_bytes",
    "generate_token_hex",
    "generate_token_urlsafe",
]

MIN_TOKEN_BYTES: Final = 16
MAX_TOKEN_BYTES: Final = 1024
_T = TypeVar("_T", bytes, str)


def _token(make: Callable[[int], _T], length: object) -> _T:
    """Check the length, then draw; a failing random source is a TokenGenerationError."""
    if isinstance(length, bool) or not isinstance(length, int):
        raise TypeError(f"length must be an int, not {type(length).__name__}")
    if not MIN_TOKEN_BYTES <= length <= MAX_TOKEN_BYTES:
        raise invalid(
            f"length must be between {MIN_TOKEN_BYTES} and {MAX_TOKEN_BYTES} bytes, got {length}"
        )
    try:
        return make(length)
    except (OSError, NotImplementedError) as exc:
        raise TokenGenerationError("the random source failed", exc) from exc


def generate_token_bytes(length: int = 32) -> bytes:
    """Return ``length`` random bytes."""
    return _token(secrets.token_bytes, length)


def generate_token_hex(length: int = 32) -> str:
    """Return ``length`` random bytes as ``2 * length`` lowercase hex characters."""
    return _token(secrets.token_hex, length)


def generate_token_urlsafe(length: int = 32) -> str:
    """Return ``length`` random bytes as unpadded URL-safe base64 (about 1.3 chars per byte)."""
    return _token(secrets.token_urlsafe, length)
