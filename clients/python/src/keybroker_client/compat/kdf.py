"""The seed's ``kdf`` module: HKDF and PBKDF2 over caller-held material, computed locally.

Both use SHA-256. ``derive_key_hkdf_with_key_id`` derives from a secret the broker holds
instead (the broker appends the context to ``info`` in a canonical form).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from keybroker_client import _facade
from keybroker_client._convert import check_bytes

from ._util import invalid, text_or_bytes

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PBKDF2_ITERATIONS",
    "derive_key_hkdf",
    "derive_key_hkdf_with_key_id",
    "derive_key_pbkdf2",
]

DEFAULT_PBKDF2_ITERATIONS: Final = 600_000
_SALT_SIZE: Final = 32
_HKDF_MAX_LENGTH: Final = 255 * 32  # RFC 5869: at most 255 blocks of the hash's output
_PBKDF2_MAX_LENGTH: Final = 1 << 20  # far above any key size; bounds memory and time


def _positive(name: str, value: object, maximum: int) -> int:
    """Lengths and counts are ints in 1..maximum, checked before any work starts."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= maximum:
        raise invalid(f"{name} must be between 1 and {maximum}, got {value}")
    return value


def _salt(salt: object) -> bytes:
    """None means a fresh random salt; an explicit empty salt is refused as a likely mistake."""
    if salt is None:
        return os.urandom(_SALT_SIZE)
    raw = check_bytes("salt", salt)
    if not raw:
        raise invalid("salt must not be empty; pass None for a fresh random salt")
    return raw


def derive_key_hkdf(
    key_material: bytes,
    *,
    salt: bytes | None = None,
    info: bytes = b"",
    length: int = 32,
) -> bytes:
    """Derive length bytes with HKDF-SHA256 from caller-held key material (RFC 5869)."""
    material = check_bytes("key_material", key_material)
    if not material:
        raise invalid("key_material must not be empty")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_positive("length", length, _HKDF_MAX_LENGTH),
        salt=None if salt is None else check_bytes("salt", salt),
        info=check_bytes("info", info),
    )
    return hkdf.derive(material)


def derive_key_pbkdf2(
    password: str | bytes,
    *,
    salt: bytes | None = None,
    iterations: int = DEFAULT_PBKDF2_ITERATIONS,
    length: int = 32,
) -> tuple[bytes, bytes]:
    """Stretch a password with PBKDF2-HMAC-SHA256 locally; returns (key, salt) to store."""
    secret = text_or_bytes("password", password)
    salt_bytes = _salt(salt)
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(),
        length=_positive("length", length, _PBKDF2_MAX_LENGTH),
        salt=salt_bytes,
        iterations=_positive("iterations", iterations, 2**32 - 1),
    )
    return kdf.derive(secret), salt_bytes


def derive_key_hkdf_with_key_id(
    key_id: str,
    *,
    info: bytes = b"",
    context: Mapping[str, str] | None = None,
    salt: bytes = b"",
    length: int = 32,
) -> bytes:
    """Derive a key with HKDF-SHA256 in the broker from a derivation secret it holds."""
    client = _facade.shared_client()
    return client.derive_key(key=key_id, info=info, context=context, salt=salt, length=length)
