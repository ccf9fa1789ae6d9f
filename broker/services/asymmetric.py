"""RSA-OAEP use cases: encrypt with a decryption key's public half, decrypt with its private half.

Encryption needs only the public key, so the broker does it here with the PEM the backend
gives (exactly what a client may do offline); decryption happens in the backend. Every
decryption failure is the same DecryptionFailedError.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.core import asymmetric
from broker.errors import InvalidRequestError, WrongKeyPurposeError
from broker.kms.base import DecryptionBackend

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from broker.policy.authorizer import Caller
    from broker.services.keys import ResolvedKey
    from broker.services.operations import Operations

__all__ = ["MAX_CIPHERTEXT_BYTES", "AsymmetricService", "Decrypted", "Encrypted"]

MAX_CIPHERTEXT_BYTES = 1024  # an RSA-8192 ciphertext; RSA-4096 ones are 512 bytes
_PURPOSES = ("asymmetric_decrypt",)


@dataclass(frozen=True, slots=True)
class Encrypted:
    """An RSA-OAEP ciphertext and the key version whose public half made it."""

    ciphertext: bytes
    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A plaintext and the key version that opened it."""

    plaintext: bytes = field(repr=False)
    key: str
    key_version: int


@functools.lru_cache(maxsize=64)
def _public_key(pem: str) -> rsa.RSAPublicKey:
    """Parsed public keys by PEM text; a rotation brings a new PEM and so a new entry."""
    return asymmetric.load_public_key(pem)


def _decrypter(key: ResolvedKey) -> DecryptionBackend:
    if not isinstance(key.backend, DecryptionBackend):
        raise WrongKeyPurposeError("this key's backend cannot decrypt")
    return key.backend


def _check_label(label: bytes) -> None:
    if len(label) > asymmetric.MAX_LABEL_BYTES:
        raise InvalidRequestError(f"label is longer than {asymmetric.MAX_LABEL_BYTES} bytes")


class AsymmetricService:
    """RSA-OAEP for authorized callers."""

    def __init__(self, ops: Operations) -> None:
        """Use the shared authorization, lookup and bounds plumbing."""
        self._ops = ops

    async def encrypt(
        self, caller: Caller, name: str, plaintext: bytes, label: bytes = b""
    ) -> Encrypted:
        """Encrypt under the current version's public key; oversize plaintext names the limit."""
        return await self._ops.audited("encrypt", self._encrypt(caller, name, plaintext, label))

    async def _encrypt(
        self, caller: Caller, name: str, plaintext: bytes, label: bytes
    ) -> Encrypted:
        self._ops.check_data(plaintext, "plaintext")
        _check_label(label)
        key = self._ops.key(caller, name, "encrypt", _PURPOSES)
        info = await _decrypter(key).public_key(key.key_id, 0)
        try:
            ciphertext = asymmetric.encrypt(_public_key(info.pem), plaintext, label)
        except asymmetric.OaepInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        return Encrypted(ciphertext, key.name, info.key_version)

    async def decrypt(
        self, caller: Caller, name: str, ciphertext: bytes, label: bytes = b"", key_version: int = 0
    ) -> Decrypted:
        """Decrypt with one version's private key (0 = current)."""
        work = self._decrypt(caller, name, ciphertext, label, key_version)
        return await self._ops.audited("decrypt", work)

    async def _decrypt(
        self, caller: Caller, name: str, ciphertext: bytes, label: bytes, key_version: int
    ) -> Decrypted:
        if len(ciphertext) > MAX_CIPHERTEXT_BYTES:
            raise InvalidRequestError(
                f"ciphertext is longer than {MAX_CIPHERTEXT_BYTES} bytes; "
                "RSA-OAEP ciphertexts are the key's size (512 bytes for RSA-4096)"
            )
        _check_label(label)
        key = self._ops.key(caller, name, "decrypt", _PURPOSES)
        backend = _decrypter(key)
        opened = await backend.decrypt(key.key_id, key_version, ciphertext, label)
        return Decrypted(opened.plaintext, key.name, opened.key_version)
