"""Key derivation: HKDF-SHA256 (RFC 5869) from a broker secret, PBKDF2-HMAC-SHA256 from passwords.

HKDF info for a named secret binds the caller's info and context without ambiguity::

    info' = u16 len(info) || info || canonical(context)

(`canonical` is the encryption-context encoding of docs/wire-format.md; the length prefix keeps
``info="a", context={…}`` from colliding with another split of the same bytes.)

PBKDF2 defaults follow OWASP (2023): 600,000 iterations and a 32-byte random salt. Requests
are bounded: 10,000..10,000,000 iterations, salts of 16..1024 bytes, outputs of 16..64 bytes.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from broker.core.context import ContextError, canonical_context

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_LENGTH",
    "MAX_INFO_BYTES",
    "MAX_SALT_BYTES",
    "OUTPUT_LENGTHS",
    "PBKDF2_DEFAULT_ITERATIONS",
    "PBKDF2_ITERATIONS",
    "PBKDF2_SALT_BYTES",
    "PBKDF2_SALT_LENGTHS",
    "KdfInputError",
    "check_length",
    "check_pbkdf2",
    "derivation_info",
    "hkdf_sha256",
    "pbkdf2_sha256",
]

DEFAULT_LENGTH: Final = 32
OUTPUT_LENGTHS: Final = (16, 64)
MAX_INFO_BYTES: Final = 1024
MAX_SALT_BYTES: Final = 1024
PBKDF2_DEFAULT_ITERATIONS: Final = 600_000
PBKDF2_ITERATIONS: Final = (10_000, 10_000_000)
PBKDF2_SALT_BYTES: Final = 32
PBKDF2_SALT_LENGTHS: Final = (16, MAX_SALT_BYTES)
_HKDF_MAX_OUTPUT: Final = 255 * 32


class KdfInputError(ValueError):
    """A derivation input breaks a bound; the message names the bound, never a value."""


def check_length(length: int) -> int:
    """The requested output length (0 means 32), refused outside 16..64."""
    length = length or DEFAULT_LENGTH
    if not OUTPUT_LENGTHS[0] <= length <= OUTPUT_LENGTHS[1]:
        lo, hi = OUTPUT_LENGTHS
        raise KdfInputError(f"length must be {lo}..{hi} bytes")
    return length


def check_pbkdf2(salt: bytes, iterations: int) -> int:
    """The iteration count (0 means 600,000), refusing weak or absurd parameters."""
    iterations = iterations or PBKDF2_DEFAULT_ITERATIONS
    lo, hi = PBKDF2_ITERATIONS
    if not lo <= iterations <= hi:
        raise KdfInputError(f"iterations must be {lo:,}..{hi:,}")
    if not PBKDF2_SALT_LENGTHS[0] <= len(salt) <= PBKDF2_SALT_LENGTHS[1]:
        lo, hi = PBKDF2_SALT_LENGTHS
        raise KdfInputError(f"salt must be {lo}..{hi} bytes (empty asks for a random one)")
    return iterations


def derivation_info(info: bytes, context: Mapping[str, str]) -> bytes:
    """The HKDF info for a named secret: length-prefixed info, then the canonical context."""
    if len(info) > MAX_INFO_BYTES:
        raise KdfInputError(f"info is longer than {MAX_INFO_BYTES} bytes")
    try:
        return struct.pack(">H", len(info)) + info + canonical_context(context)
    except ContextError as exc:
        raise KdfInputError(str(exc)) from None


def hkdf_sha256(secret: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869); an empty salt is the RFC's default of zeros."""
    if len(salt) > MAX_SALT_BYTES:
        raise KdfInputError(f"salt is longer than {MAX_SALT_BYTES} bytes")
    if not 1 <= length <= _HKDF_MAX_OUTPUT:
        raise KdfInputError(f"HKDF-SHA256 output must be 1..{_HKDF_MAX_OUTPUT} bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info)
    return hkdf.derive(secret)


def pbkdf2_sha256(password: bytes, *, salt: bytes, iterations: int, length: int) -> bytes:
    """PBKDF2-HMAC-SHA256 (RFC 8018); bounds are the caller's (see check_pbkdf2)."""
    if iterations < 1 or length < 1:
        raise KdfInputError("iterations and length must be positive")
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=length, salt=salt, iterations=iterations)
    return kdf.derive(password)
