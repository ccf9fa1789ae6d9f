"""The seed's ``tokens`` module: random tokens from the local ``secrets`` module.

``n`` is the entropy in bytes, 16 to 1024, the same bounds the broker's TokenService
enforces, so moving a call between the two never changes what is accepted.
"""

from __future__ import annotations

import secrets
from typing import Final

from ._util import invalid

__all__ = [
    "MAX_TOKEN_BYTES",
    "MIN_TOKEN_BYTES",
    "generate_token_bytes",
    "generate_token_hex",
    "generate_token_urlsafe",
]

MIN_TOKEN_BYTES: Final = 16
MAX_TOKEN_BYTES: Final = 1024


def _entropy(n: object) -> int:
    """Refuse tokens too short to resist guessing (under 128 bits) or absurdly long."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if not MIN_TOKEN_BYTES <= n <= MAX_TOKEN_BYTES:
        raise invalid(f"n must be between {MIN_TOKEN_BYTES} and {MAX_TOKEN_BYTES} bytes, got {n}")
    return n


def generate_token_bytes(n: int = 32) -> bytes:
    """Return n random bytes."""
    return secrets.token_bytes(_entropy(n))


def generate_token_hex(n: int = 32) -> str:
    """Return n random bytes as 2n lowercase hex characters."""
    return secrets.token_hex(_entropy(n))


def generate_token_urlsafe(n: int = 32) -> str:
    """Return n random bytes as unpadded URL-safe base64 text."""
    return secrets.token_urlsafe(_entropy(n))
