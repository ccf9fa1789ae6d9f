"""Key-derivation use cases: HKDF-SHA256 from a named broker secret, PBKDF2 from a password.

HKDF binds the caller's info and context (core/kdf.py) and always uses the secret's current
version, which the result names: rotating a derivation secret changes every derived key, so
rotate one only together with the data its keys protect. PBKDF2 runs in the bounded work
pool (ResourceExhaustedError at once when it is full); without a salt a fresh 32-byte random
one is drawn and returned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.core import kdf, passwords
from broker.errors import InvalidRequestError, WrongKeyPurposeError
from broker.kms.base import SecretBackend

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.policy.authorizer import Caller
    from broker.services.keys import ResolvedKey
    from broker.services.operations import Operations
    from broker.services.workpool import WorkPool

__all__ = ["Derived", "HkdfItem", "KeyDerivationService", "Stretched"]

_PBKDF2_MEMORY = 64 << 10  # a PBKDF2 job holds a core, not memory


@dataclass(frozen=True, slots=True)
class HkdfItem:
    """What to derive from a named secret; length 0 means 32 bytes."""

    key: str
    info: bytes = b""
    context: Mapping[str, str] = field(default_factory=dict)
    salt: bytes = b""
    length: int = 0


@dataclass(frozen=True, slots=True)
class Derived:
    """A derived key and the secret version it came from."""

    derived_key: bytes = field(repr=False)
    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class Stretched:
    """A PBKDF2 key and the parameters that reproduce it."""

    derived_key: bytes = field(repr=False)
    salt: bytes
    iterations: int
    key: str = ""
    key_version: int = 0


def _secret_backend(key: ResolvedKey) -> SecretBackend:
    if not isinstance(key.backend, SecretBackend):
        raise WrongKeyPurposeError("this key's backend cannot derive keys")
    return key.backend


class KeyDerivationService:
    """Derives keys for authorized callers."""

    def __init__(self, ops: Operations, pool: WorkPool) -> None:
        """Use the shared plumbing and the bounded pool that runs PBKDF2."""
        self._ops = ops
        self._pool = pool

    async def hkdf(self, caller: Caller, item: HkdfItem) -> Derived:
        """HKDF-SHA256 from the current version of a derivation secret."""
        return await self._ops.audited("derive", self._hkdf(caller, item))

    async def _hkdf(self, caller: Caller, item: HkdfItem) -> Derived:
        try:
            length = kdf.check_length(item.length)
            info = kdf.derivation_info(item.info, item.context)
        except kdf.KdfInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        if len(item.salt) > kdf.MAX_SALT_BYTES:
            raise InvalidRequestError(f"salt is longer than {kdf.MAX_SALT_BYTES} bytes")
        key = self._ops.key(caller, item.key, "derive", ("derivation",), item.context)
        backend = _secret_backend(key)
        out = await backend.derive(key.key_id, salt=item.salt, info=info, length=length)
        return Derived(out.key, key.name, out.key_version)

    async def pbkdf2(
        self, caller: Caller, password: bytes, salt: bytes, iterations: int, length: int
    ) -> Stretched:
        """PBKDF2-HMAC-SHA256 (600,000 iterations and a random 32-byte salt by default)."""
        return await self._ops.audited(
            "derive", self._pbkdf2(caller, password, salt, iterations, length)
        )

    async def _pbkdf2(
        self, caller: Caller, password: bytes, salt: bytes, iterations: int, length: int
    ) -> Stretched:
        salt = salt or os.urandom(kdf.PBKDF2_SALT_BYTES)
        try:
            passwords.check_password(password)
            length = kdf.check_length(length)
            iterations = kdf.check_pbkdf2(salt, iterations)
        except (kdf.KdfInputError, passwords.PasswordInputError) as exc:
            raise InvalidRequestError(str(exc)) from None
        self._ops.authorize(caller, "derive")
        derived = await self._pool.run(
            caller,
            _PBKDF2_MEMORY,
            lambda: kdf.pbkdf2_sha256(password, salt=salt, iterations=iterations, length=length),
        )
        return Stretched(derived, salt, iterations)
