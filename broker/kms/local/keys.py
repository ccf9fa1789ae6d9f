"""Signing, RSA-OAEP decryption, HMAC and derivation with local keyring keys.

The keyring holds each version's material sealed under the root key; this module opens it on
first use and keeps the loaded key objects per (key, version), because loading an RSA key
costs milliseconds and a keyring version never changes. Private keys, HMAC keys and secrets
never leave this object: callers get signatures, MACs, plaintexts, derived keys and PEM
public keys only. RSA private-key operations (several milliseconds each) run in a worker
thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa

from broker.core import asymmetric, macs, signatures
from broker.core.kdf import KdfInputError, hkdf_sha256
from broker.errors import (
    DecryptionFailedError,
    InvalidRequestError,
    KeyStateError,
    KmsKeyNotFoundError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.kms.base import Decryption, DerivedSecret, MacResult, PublicKeyInfo, SignResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.kms.local.keyring import Keyring

__all__ = ["SIGNING_TYPES", "LocalKeyOperations"]

# local key type -> signature algorithm
SIGNING_TYPES: Final = {
    "ecdsa-p384": "ecdsa-p384-sha384",
    "ecdsa-p256": "ecdsa-p256-sha256",
    "ed25519": "ed25519",
    "rsa-pss-3072": "rsa-pss-3072-sha256",
    "rsa-pss-4096": "rsa-pss-4096-sha256",
}
_OAEP_TYPES: Final = frozenset({"rsa-oaep-4096"})
_HMAC_TYPES: Final = frozenset({"hmac-sha256"})
_SECRET_TYPES: Final = frozenset({"secret-256"})
_ASYMMETRIC_TYPES: Final = frozenset(SIGNING_TYPES) | _OAEP_TYPES
_Private = signatures.PrivateKey
T = TypeVar("T")


class LocalKeyOperations:
    """The SigningBackend, DecryptionBackend, MacBackend and SecretBackend of the keyring."""

    def __init__(self, keyring: Keyring) -> None:
        """Serve the non-envelope keys of an opened keyring."""
        self._ring = keyring
        self._private: dict[tuple[str, int], _Private] = {}
        self._secrets: dict[tuple[str, int], bytes] = {}

    def forget_keys(self) -> None:
        """Drop every loaded key object (on close)."""
        self._private.clear()
        self._secrets.clear()

    def _type(self, key_id: str, allowed: frozenset[str]) -> str:
        key_type = self._ring.key_type(key_id)
        if key_type is None:
            raise KmsKeyNotFoundError
        if key_type not in allowed:
            raise WrongKeyPurposeError
        return key_type

    def _version(self, key_id: str, key_version: int) -> int:
        """The version to use (0 = current), refused when it is disabled or absent."""
        version = key_version or self._ring.current_version(key_id)
        if not self._ring.is_enabled(key_id, version):
            known = {m.version for m in self._ring.versions(key_id)}
            raise KeyStateError(None if version in known else "no such key version")
        return version

    def _candidates(self, key_id: str, key_version: int) -> list[int]:
        """One requested version, or every enabled version newest first."""
        if key_version:
            return [self._version(key_id, key_version)]
        return [m.version for m in reversed(self._ring.versions(key_id)) if m.enabled]

    def _material(self, key_id: str, version: int) -> bytes:
        material = self._ring.material(key_id, version)
        if material is None:  # pragma: no cover - _version checked it exists
            raise KeyStateError("no such key version")
        try:
            return bytes(material)
        finally:
            material[:] = bytes(len(material))

    def _private_key(self, key_id: str, key_type: str, version: int) -> _Private:
        key = self._private.get((key_id, version))
        if key is None:
            der = self._material(key_id, version)
            # The keyring authenticated this material and only ever stores keys made here.
            if key_type in _OAEP_TYPES:
                key = asymmetric.load_private_key(der, trusted=True)
            else:
                key = signatures.load_private_key(SIGNING_TYPES[key_type], der, trusted=True)
            self._private[(key_id, version)] = key
        return key

    def _secret(self, key_id: str, version: int) -> bytes:
        secret = self._secrets.get((key_id, version))
        if secret is None:
            secret = self._secrets[(key_id, version)] = self._material(key_id, version)
        return secret

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """The PEM public half of an asymmetric key version (0 = current)."""
        key_type = self._type(key_id, _ASYMMETRIC_TYPES)
        version = self._version(key_id, key_version)
        key = self._private_key(key_id, key_type, version)
        algorithm = SIGNING_TYPES.get(key_type, asymmetric.ALGORITHM)
        return PublicKeyInfo(signatures.public_pem(key), version, algorithm)

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """Sign with the current version."""
        key_type = self._type(key_id, frozenset(SIGNING_TYPES))
        algorithm = SIGNING_TYPES[key_type]
        version = self._version(key_id, 0)
        key = self._private_key(key_id, key_type, version)
        try:
            signature = await _run(
                key_type, lambda: signatures.sign(key, algorithm, message, prehashed=prehashed)
            )
        except signatures.SignatureInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        return SignResult(signature, version, algorithm)

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """The version that verifies the signature (0 tries every enabled version)."""
        key_type = self._type(key_id, frozenset(SIGNING_TYPES))
        algorithm = SIGNING_TYPES[key_type]
        for version in self._candidates(key_id, key_version):
            public = self._private_key(key_id, key_type, version).public_key()
            try:
                signatures.verify(public, algorithm, signature, message, prehashed=prehashed)
            except signatures.InvalidSignatureError:
                continue
            except signatures.SignatureInputError as exc:
                raise InvalidRequestError(str(exc)) from None
            return version
        raise VerificationFailedError

    async def decrypt(
        self, key_id: str, key_version: int, ciphertext: bytes, label: bytes
    ) -> Decryption:
        """RSA-OAEP-decrypt with one version (0 = current)."""
        key_type = self._type(key_id, _OAEP_TYPES)
        version = self._version(key_id, key_version)
        key = self._private_key(key_id, key_type, version)
        if not isinstance(key, rsa.RSAPrivateKey):  # pragma: no cover - by key type
            raise WrongKeyPurposeError
        try:
            plaintext = await _run(key_type, lambda: asymmetric.decrypt(key, ciphertext, label))
        except asymmetric.OaepInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        except asymmetric.OaepDecryptionError:
            raise DecryptionFailedError from None
        return Decryption(plaintext, version)

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """HMAC-SHA256 under one version (0 = current)."""
        self._type(key_id, _HMAC_TYPES)
        version = self._version(key_id, key_version)
        return MacResult(macs.hmac_sha256(self._secret(key_id, version), data), version)

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """The version whose key made the MAC (0 tries every enabled version)."""
        self._type(key_id, _HMAC_TYPES)
        for version in self._candidates(key_id, key_version):
            try:
                macs.verify_hmac_sha256(self._secret(key_id, version), data, mac)
            except macs.MacMismatchError:
                continue
            return version
        raise VerificationFailedError

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """HMAC under a key derived for `label` from the current version."""
        self._type(key_id, _HMAC_TYPES)
        version = self._version(key_id, 0)
        try:
            mac = macs.derived_mac(self._secret(key_id, version), label, data, length)
        except macs.MacInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        return MacResult(mac, version)

    async def derive(self, key_id: str, *, salt: bytes, info: bytes, length: int) -> DerivedSecret:
        """HKDF-SHA256 from the current version of a derivation secret."""
        self._type(key_id, _SECRET_TYPES)
        version = self._version(key_id, 0)
        try:
            key = hkdf_sha256(self._secret(key_id, version), salt=salt, info=info, length=length)
        except KdfInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        return DerivedSecret(key, version)


async def _run(key_type: str, fn: Callable[[], T]) -> T:
    """RSA private-key operations in a worker thread; the rest inline (well under 1 ms)."""
    if key_type.startswith("rsa-"):
        return await asyncio.to_thread(fn)
    return fn()
