"""The narrow interface services need from a key management service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = [
    "BackendKey",
    "Decryption",
    "DecryptionBackend",
    "DerivedSecret",
    "GeneratedKey",
    "KeyVersionInfo",
    "KmsBackend",
    "MacBackend",
    "MacResult",
    "PublicKeyBackend",
    "PublicKeyInfo",
    "SecretBackend",
    "SignResult",
    "SigningBackend",
    "WrappedKey",
]

VersionState = Literal["enabled", "disabled"]


@dataclass(frozen=True, slots=True)
class KeyVersionInfo:
    """One version of a backend key."""

    version: int
    state: VersionState = "enabled"
    created: datetime | None = None


@dataclass(frozen=True, slots=True)
class BackendKey:
    """What a backend says about one key: metadata only, never material."""

    key_id: str
    current_version: int
    versions: tuple[KeyVersionInfo, ...] = ()
    algorithm: str = "aes-256-gcm"
    rotatable: bool = True


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A DEK wrapped by the backend, with the key version that wrapped it (0 = KMS-managed)."""

    wrapped: bytes
    key_version: int


@dataclass(slots=True)
class GeneratedKey:
    """A fresh DEK and its wrapped form; `plaintext` is a bytearray so it can be wiped."""

    plaintext: bytearray
    wrapped: bytes
    key_version: int
    _wiped: bool = field(default=False, repr=False)

    def wipe(self) -> None:
        """Overwrite the plaintext DEK (best effort in Python)."""
        self.plaintext[:] = bytes(len(self.plaintext))
        self._wiped = True


@runtime_checkable
class KmsBackend(Protocol):
    """A key management service holding the key-encryption keys of some logical keys.

    `key_id` is the part of the key URI after the scheme (`local://NAME` -> `NAME`).
    `context` is the caller's encryption context; a backend binds it to the wrapped DEK when
    it can (AWS KMS EncryptionContext, AAD), so a wrapped DEK only unwraps with the same one.
    Errors are the `broker.errors.Kms*Error` classes, never SDK exceptions.
    """

    scheme: str

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """Create a random 32-byte DEK and wrap it under the key's current version."""
        ...

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Wrap a caller-supplied DEK under the key's current version."""
        ...

    async def unwrap(
        self,
        key_id: str,
        key_version: int,
        wrapped: bytes,
        context: Mapping[str, str],
    ) -> bytearray:
        """Unwrap a DEK; KmsInvalidCiphertextError when the backend rejects the wrapped bytes."""
        ...

    async def describe_key(self, key_id: str) -> BackendKey:
        """Return the key's metadata and versions; KmsKeyNotFoundError when it does not exist."""
        ...

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Create a new version that new wraps use; old versions keep unwrapping."""
        ...

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Enable or disable one version; a disabled version refuses to wrap and unwrap."""
        ...

    async def health(self) -> None:
        """Raise KmsUnavailableError or KmsAuthenticationError when the backend cannot serve."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


# Narrow interfaces for keys that never leave their backend: asymmetric keys, HMAC keys and
# derivation secrets. A backend implements the ones its keys support (the local keyring all
# of them; AWS KMS Sign/Verify/GenerateMac or Vault transit sign/hmac later). `key_version`
# 0 means "current" when producing and "every enabled version" when verifying. Errors are
# broker.errors classes: KmsKeyNotFoundError, KeyStateError (disabled or unknown version),
# WrongKeyPurposeError, InvalidRequestError (input the algorithm refuses),
# VerificationFailedError, DecryptionFailedError.


@dataclass(frozen=True, slots=True)
class SignResult:
    """A signature and the key version and algorithm that made it."""

    signature: bytes
    key_version: int
    algorithm: str


@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    """The public half of one version of an asymmetric key."""

    pem: str
    key_version: int
    algorithm: str


@dataclass(frozen=True, slots=True)
class Decryption:
    """A plaintext and the key version that decrypted it."""

    plaintext: bytes = field(repr=False)
    key_version: int


@dataclass(frozen=True, slots=True)
class MacResult:
    """A MAC and the key version that made it."""

    mac: bytes
    key_version: int


@dataclass(frozen=True, slots=True)
class DerivedSecret:
    """Key material derived from a backend secret, and the secret's version."""

    key: bytes = field(repr=False)
    key_version: int


@runtime_checkable
class PublicKeyBackend(Protocol):
    """Serves the public halves of asymmetric keys."""

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """The SubjectPublicKeyInfo PEM of a version (0 = current)."""
        ...


@runtime_checkable
class SigningBackend(PublicKeyBackend, Protocol):
    """Signs with private keys that stay in the backend (AWS KMS Sign, Vault transit sign)."""

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """Sign a message, or its digest when `prehashed`, with the current version."""
        ...

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """The version whose key verifies the signature; VerificationFailedError if none does."""
        ...


@runtime_checkable
class DecryptionBackend(PublicKeyBackend, Protocol):
    """Decrypts with RSA-OAEP private keys that stay in the backend."""

    async def decrypt(
        self, key_id: str, key_version: int, ciphertext: bytes, label: bytes
    ) -> Decryption:
        """The plaintext of one version (0 = current); DecryptionFailedError for any failure."""
        ...


@runtime_checkable
class MacBackend(Protocol):
    """Computes and checks HMAC-SHA256 under keys that stay in the backend."""

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """The MAC of data under a version (0 = current)."""
        ...

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """The version whose key made the MAC (compared in constant time)."""
        ...

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """A MAC under a key derived for `label` from the current version (blind indexes)."""
        ...


@runtime_checkable
class SecretBackend(Protocol):
    """Derives keys from secrets that stay in the backend."""

    async def derive(self, key_id: str, *, salt: bytes, info: bytes, length: int) -> DerivedSecret:
        """HKDF-SHA256 output from the current version of the secret."""
        ...
