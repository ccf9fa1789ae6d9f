"""Signing use cases: sign, verify and public keys of asymmetric keys the broker holds.

A signature that does not verify is VerificationFailedError, never a false result. Signing
uses the key's current version; verification tries one version or every enabled one.
Private halves stay in the backend: this layer sees signatures and PEM public keys only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.core.signatures import MAX_SIGNATURE_BYTES
from broker.errors import BrokerError, InvalidRequestError, WrongKeyPurposeError
from broker.kms.base import PublicKeyBackend, SigningBackend

if TYPE_CHECKING:
    from collections.abc import Sequence

    from broker.policy.authorizer import Caller
    from broker.services.keys import ResolvedKey
    from broker.services.operations import Operations

__all__ = ["PublicKey", "SignItem", "Signed", "SigningService", "Verified", "VerifyItem"]

_SIGNING = ("signing",)
_ASYMMETRIC = ("signing", "asymmetric_decrypt")


@dataclass(frozen=True, slots=True)
class SignItem:
    """One message (or digest, when `prehashed`) to sign."""

    key: str
    message: bytes
    prehashed: bool = False


@dataclass(frozen=True, slots=True)
class VerifyItem:
    """One signature to check; version 0 tries every enabled version."""

    key: str
    message: bytes
    signature: bytes
    key_version: int = 0
    prehashed: bool = False


@dataclass(frozen=True, slots=True)
class Signed:
    """A signature and what made it."""

    signature: bytes
    key: str
    key_version: int
    algorithm: str


@dataclass(frozen=True, slots=True)
class Verified:
    """A valid signature's key and version."""

    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class PublicKey:
    """The PEM public half of one key version."""

    pem: str
    key: str
    key_version: int
    algorithm: str


def _signer(key: ResolvedKey) -> SigningBackend:
    if not isinstance(key.backend, SigningBackend):
        raise WrongKeyPurposeError("this key's backend cannot sign")
    return key.backend


class SigningService:
    """Signs and verifies for authorized callers."""

    def __init__(self, ops: Operations) -> None:
        """Use the shared authorization, lookup, bounds and batch plumbing."""
        self._ops = ops

    async def sign(self, caller: Caller, items: Sequence[SignItem]) -> list[Signed | BrokerError]:
        """Sign each item with its key's current version."""
        return await self._ops.batch("sign", items, lambda i: self._sign_one(caller, i))

    async def _sign_one(self, caller: Caller, item: SignItem) -> Signed:
        self._ops.check_data(item.message, "digest" if item.prehashed else "data")
        key = self._ops.key(caller, item.key, "sign", _SIGNING)
        result = await _signer(key).sign(key.key_id, item.message, prehashed=item.prehashed)
        return Signed(result.signature, key.name, result.key_version, result.algorithm)

    async def verify(
        self, caller: Caller, items: Sequence[VerifyItem]
    ) -> list[Verified | BrokerError]:
        """Verify each signature; an invalid one is a VerificationFailedError result."""
        return await self._ops.batch("verify", items, lambda i: self._verify_one(caller, i))

    async def _verify_one(self, caller: Caller, item: VerifyItem) -> Verified:
        self._ops.check_data(item.message, "digest" if item.prehashed else "data")
        if len(item.signature) > MAX_SIGNATURE_BYTES:
            raise InvalidRequestError(f"signature is longer than {MAX_SIGNATURE_BYTES} bytes")
        key = self._ops.key(caller, item.key, "verify", _SIGNING)
        version = await _signer(key).verify(
            key.key_id, item.key_version, item.message, item.signature, prehashed=item.prehashed
        )
        return Verified(key.name, version)

    async def public_key(self, caller: Caller, name: str, key_version: int) -> PublicKey:
        """The PEM public half of a signing or RSA decryption key (version 0 = current)."""
        return await self._ops.audited("public_key", self._public_key(caller, name, key_version))

    async def _public_key(self, caller: Caller, name: str, key_version: int) -> PublicKey:
        key = self._ops.key(caller, name, "verify", _ASYMMETRIC)
        if not isinstance(key.backend, PublicKeyBackend):
            raise WrongKeyPurposeError("this key's backend has no public key to give")
        info = await key.backend.public_key(key.key_id, key_version)
        return PublicKey(info.pem, key.name, info.key_version, info.algorithm)
