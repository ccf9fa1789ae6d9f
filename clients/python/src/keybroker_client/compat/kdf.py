"""The seed's key derivation: HKDF-SHA256 and PBKDF2-HMAC-SHA256 over caller-held input, locally.

Both default to a fresh random 32-byte salt when ``salt`` is None, as the seed does: the
HKDF salt is then lost (only use it for keys that are stored, not re-derived), while PBKDF2
returns its salt with the key. ``derive_key_hkdf_with_key_id`` is a keybroker addition that
derives from a secret the broker holds.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from keybroker_client._convert import check_bytes

from ._calls import broker_call, client
from ._util import invalid, text_or_bytes
from .exceptions import KeyDerivationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PBKDF2_ITERATIONS",
    "derive_key_hkdf",
    "derive_key_hkdf_with_key_id",
    "derive_key_pbkdf2",
]

DEFAULT_PBKDF2_ITERATIONS: Final = 600_000
SALT_SIZE: Final = 32
_MAX_ITERATIONS: Final = 2**32 - 1


def _positive(name: str, value: object) -> int:
    """Lengths and counts are ints of at least 1, checked before any work starts."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise invalid(f"{name} must be at least 1, got {value}")
    return value


def _salt(salt: object) -> bytes:
    """None means a fresh random salt, as the seed documents."""
    return os.urandom(SALT_SIZE) if salt is None else check_bytes("salt", salt)


def derive_key_hkdf(
    input_key_material: bytes,
    length: int = 32,
    salt: bytes | None = None,
    info: bytes | None = None,
) -> bytes:
    """Derive ``length`` bytes with HKDF-SHA256 (RFC 5869) from caller-held key material."""
    material = check_bytes("input_key_material", input_key_material)
    if not material:
        raise invalid("input_key_material must not be empty")
    size = _positive("length", length)
    context = b"" if info is None else check_bytes("info", info)
    try:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=size, salt=_salt(salt), info=context)
        return hkdf.derive(material)
    except ValueError as exc:
        raise KeyDerivationError(f"HKDF-SHA256 cannot derive {size} bytes", exc) from exc


def derive_key_pbkdf2(
    passphrase: str | bytes,
    length: int = 32,
    salt: bytes | None = None,
    iterations: int = DEFAULT_PBKDF2_ITERATIONS,
) -> tuple[bytes, bytes]:
    """Stretch a passphrase with PBKDF2-HMAC-SHA256; returns (derived_key, salt) to store."""
    secret = text_or_bytes("passphrase", passphrase)
    size = _positive("length", length)
    rounds = _positive("iterations", iterations)
    if rounds > _MAX_ITERATIONS:
        raise invalid(f"iterations must be at most {_MAX_ITERATIONS}, got {rounds}")
    salt_bytes = _salt(salt)
    if not salt_bytes:
        raise invalid("salt must not be empty; pass None for a fresh random salt")
    try:
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=size, salt=salt_bytes, iterations=rounds)
        return kdf.derive(secret), salt_bytes
    except (ValueError, OverflowError) as exc:
        raise KeyDerivationError(f"PBKDF2-HMAC-SHA256 cannot derive {size} bytes", exc) from exc


def derive_key_hkdf_with_key_id(
    key_id: str,
    *,
    info: bytes = b"",
    context: Mapping[str, str] | None = None,
    salt: bytes = b"",
    length: int = 32,
) -> bytes:
    """Derive a key with HKDF-SHA256 in the broker from a derivation secret it holds."""
    with broker_call(KeyDerivationError):
        return client().derive_key(key=key_id, info=info, context=context, salt=salt, length=length)
