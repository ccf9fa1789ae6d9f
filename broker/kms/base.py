"""The narrow interface services need from a key management service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = ["BackendKey", "GeneratedKey", "KeyVersionInfo", "KmsBackend", "WrappedKey"]

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
