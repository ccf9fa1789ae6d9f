"""Argon2id password hashes in the PHC string format, parsed strictly and with bounded costs.

A hash string is ``$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>`` with salt and
hash in unpadded standard base64, the format the reference implementation and argon2-cffi
write and read. New hashes use t=3, m=64 MiB, p=4, a 16-byte random salt and a 32-byte hash.

A stored hash string is caller input: its parameters decide how much memory and time
verifying costs. Parsing therefore accepts only argon2id version 19 with every parameter
inside fixed bounds (at most 256 MiB, 10 passes, 16 lanes), so no string can make the
broker allocate more.

A peppered hash (services/passwords.py) hashes HMAC-SHA256(pepper key, password) instead of the
password, so a stolen hash database is useless without the broker's key.

Argon2id is computed by argon2-cffi (libargon2, the reference implementation). It releases
the GIL for the whole derivation and keeps no shared state between calls, so derivations in
different threads run at the same time; how many run at once is the caller's to bound
(services/workpool.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from dataclasses import dataclass
from typing import Final

from argon2.low_level import Type, hash_secret_raw

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_HASH_STRING",
    "MAX_PASSWORD_BYTES",
    "Argon2Params",
    "PasswordHash",
    "PasswordHashFormatError",
    "PasswordInputError",
    "PasswordMismatchError",
    "check_password",
    "format_hash",
    "hash_password",
    "needs_rehash",
    "parse_hash",
    "verify_password",
]

MAX_PASSWORD_BYTES: Final = 1024
MAX_HASH_STRING: Final = 256
_VERSION: Final = 19
_MAX_MEMORY_KIB: Final = 256 * 1024
_MAX_TIME_COST: Final = 10
_MAX_PARALLELISM: Final = 16
_SALT_BOUNDS: Final = (8, 64)
_HASH_BOUNDS: Final = (16, 64)
_INT = r"(0|[1-9][0-9]{0,9})"
_B64 = r"([A-Za-z0-9+/]{11,88})"
_PHC = re.compile(rf"\$argon2id\$v={_INT}\$m={_INT},t={_INT},p={_INT}\${_B64}\${_B64}")


class PasswordInputError(ValueError):
    """The password breaks a bound; the message names the bound, never the password."""


class PasswordHashFormatError(ValueError):
    """The hash string is not an Argon2id PHC string within the accepted bounds."""


class PasswordMismatchError(Exception):
    """The password does not match the hash; one fixed message."""

    def __init__(self) -> None:
        """Carry one fixed message so a failure reveals nothing about its cause."""
        super().__init__("password does not match")


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """Argon2id cost parameters and output sizes."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4
    hash_bytes: int = 32
    salt_bytes: int = 16

    @property
    def memory_bytes(self) -> int:
        """Memory one derive allocates, for budgeting."""
        return self.memory_kib * 1024


DEFAULT_PARAMS: Final = Argon2Params()


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed hash string."""

    params: Argon2Params
    salt: bytes
    digest: bytes


def check_password(password: bytes) -> None:
    """Refuse an empty password or one over MAX_PASSWORD_BYTES, before any work."""
    if not password:
        raise PasswordInputError("password must not be empty")
    if len(password) > MAX_PASSWORD_BYTES:
        raise PasswordInputError(f"password is longer than {MAX_PASSWORD_BYTES} bytes")


def _derive(password: bytes, params: Argon2Params, salt: bytes, length: int) -> bytes:
    return hash_secret_raw(
        password,
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=length,
        type=Type.ID,
        version=_VERSION,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if len(text) % 4 == 1:
        raise PasswordHashFormatError("hash string has a malformed base64 field")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise PasswordHashFormatError("hash string has a malformed base64 field") from None


def format_hash(parsed: PasswordHash) -> str:
    """The PHC string of a hash."""
    p = parsed.params
    return (
        f"$argon2id$v={_VERSION}$m={p.memory_kib},t={p.time_cost},p={p.parallelism}"
        f"${_b64(parsed.salt)}${_b64(parsed.digest)}"
    )


def hash_password(password: bytes, params: Argon2Params = DEFAULT_PARAMS) -> str:
    """Hash with a fresh random salt; returns the PHC string to store."""
    check_password(password)
    salt = os.urandom(params.salt_bytes)
    digest = _derive(password, params, salt, params.hash_bytes)
    return format_hash(PasswordHash(params, salt, digest))


def parse_hash(text: str) -> PasswordHash:
    """Parse a stored hash string, refusing anything outside the accepted bounds."""
    match = _PHC.fullmatch(text) if len(text) <= MAX_HASH_STRING else None
    if match is None:
        raise PasswordHashFormatError("hash is not an Argon2id PHC string ($argon2id$v=19$...)")
    version, m, t, p = (int(g) for g in match.groups()[:4])
    salt, digest = _unb64(match.group(5)), _unb64(match.group(6))
    if version != _VERSION:
        raise PasswordHashFormatError(f"hash uses Argon2 version {version}; only 19 is accepted")
    if not (
        1 <= p <= _MAX_PARALLELISM and 8 * p <= m <= _MAX_MEMORY_KIB and 1 <= t <= _MAX_TIME_COST
    ):
        raise PasswordHashFormatError(
            f"hash parameters are outside the accepted bounds (m at most {_MAX_MEMORY_KIB} KiB, "
            f"t 1..{_MAX_TIME_COST}, p 1..{_MAX_PARALLELISM})"
        )
    if not _SALT_BOUNDS[0] <= len(salt) <= _SALT_BOUNDS[1]:
        raise PasswordHashFormatError("hash salt must be 8..64 bytes")
    if not _HASH_BOUNDS[0] <= len(digest) <= _HASH_BOUNDS[1]:
        raise PasswordHashFormatError("hash output must be 16..64 bytes")
    return PasswordHash(Argon2Params(t, m, p, len(digest), len(salt)), salt, digest)


def verify_password(password: bytes, parsed: PasswordHash) -> None:
    """Return silently when the password matches; raise PasswordMismatchError otherwise."""
    check_password(password)
    digest = _derive(password, parsed.params, parsed.salt, len(parsed.digest))
    if not hmac.compare_digest(digest, parsed.digest):
        raise PasswordMismatchError


def needs_rehash(parsed: PasswordHash, current: Argon2Params = DEFAULT_PARAMS) -> bool:
    """Whether a hash is weaker than the current parameters (less memory, passes or output)."""
    p = parsed.params
    return (
        p.memory_kib < current.memory_kib
        or p.time_cost < current.time_cost
        or p.hash_bytes < current.hash_bytes
        or p.salt_bytes < current.salt_bytes
    )
