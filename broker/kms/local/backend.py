"""The local backend (`local://NAME`): key-encryption keys from the keyring file in the state dir.

For development and single-host deployments. Each logical key has versioned 256-bit
material; a DEK is wrapped as `nonce ‖ AES-256-GCM(material, nonce, DEK, aad)` with the key
name, version and canonical encryption context in the AAD (docs/wire-format.md).
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.core import asymmetric, signatures
from broker.core.context import canonical_context
from broker.errors import KeyStateError, KmsInvalidCiphertextError, KmsKeyNotFoundError
from broker.kms.base import BackendKey, GeneratedKey, KeyVersionInfo, WrappedKey
from broker.kms.local.keys import SIGNING_TYPES, LocalKeyOperations

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.kms.local.keyring import Keyring

__all__ = ["KEY_TYPES", "LOCAL_ALGORITHMS", "LocalBackend", "local_key_type", "new_material"]

_WRAP_AAD = b"keybroker/local/v1"
_NONCE = 12
_WRAPPED_LEN = _NONCE + 32 + 16
# key type -> algorithm name reported by DescribeKey (and accepted as `algorithm` in config)
KEY_TYPES = {
    "aes-256": "aes-256-gcm",
    "hmac-sha256": "hmac-sha256",
    "ecdsa-p384": "ecdsa-p384-sha384",
    "ecdsa-p256": "ecdsa-p256-sha256",
    "ed25519": "ed25519",
    "rsa-pss-3072": "rsa-pss-3072-sha256",
    "rsa-pss-4096": "rsa-pss-4096-sha256",
    "rsa-oaep-4096": "rsa-oaep-4096-sha256",
    "secret-256": "secret-256",
}
# key purpose -> the algorithms a local key of that purpose may have; the first is the default
LOCAL_ALGORITHMS = {
    "envelope": ("aes-256-gcm",),
    "signing": (
        "ecdsa-p384-sha384",
        "ecdsa-p256-sha256",
        "ed25519",
        "rsa-pss-3072-sha256",
        "rsa-pss-4096-sha256",
    ),
    "hmac": ("hmac-sha256",),
    "asymmetric_decrypt": ("rsa-oaep-4096-sha256",),
    "derivation": ("secret-256",),
}
_TYPE_OF = {algorithm: key_type for key_type, algorithm in KEY_TYPES.items()}


def local_key_type(purpose: str, algorithm: str) -> str:
    """The keyring type for a purpose and algorithm ("" = the purpose's default).

    Raises ValueError naming the algorithms the purpose allows.
    """
    allowed = LOCAL_ALGORITHMS.get(purpose)
    if allowed is None:
        raise ValueError(f"{purpose} keys are not supported by local:// keys")
    chosen = algorithm or allowed[0]
    if chosen not in allowed:
        raise ValueError(f"{purpose} keys take one of {', '.join(allowed)} (got {chosen!r})")
    return _TYPE_OF[chosen]


def new_material(key_type: str) -> bytes:
    """Generate fresh material for a key type (private keys as unencrypted PKCS#8 DER)."""
    if key_type in ("aes-256", "hmac-sha256", "secret-256"):
        return os.urandom(32)
    if key_type in SIGNING_TYPES:
        return signatures.generate_private_key(SIGNING_TYPES[key_type])
    if key_type == "rsa-oaep-4096":
        return asymmetric.generate_private_key()
    raise ValueError(f"unknown local key type {key_type!r}; known: {', '.join(KEY_TYPES)}")


def _aad(name: str, version: int, context: Mapping[str, str]) -> bytes:
    n = name.encode()
    return (
        _WRAP_AAD
        + struct.pack(">B", len(n))
        + n
        + struct.pack(">I", version)
        + canonical_context(context)
    )


class LocalBackend(LocalKeyOperations):
    """KmsBackend over the local keyring; material stays in this process.

    Signing, RSA-OAEP, HMAC and derivation keys are served by LocalKeyOperations.
    """

    scheme = "local"
    max_concurrency: int | None = None  # in-process: nothing to queue for

    def __init__(self, keyring: Keyring) -> None:
        """Serve the keys of an opened keyring."""
        super().__init__(keyring)
        self._ciphers: dict[tuple[str, int], AESGCM] = {}
        self._lock = asyncio.Lock()

    def ensure_key(self, name: str, key_type: str) -> bool:
        """Create the key on first start; returns True when it was created."""
        existing = self._ring.key_type(name)
        if existing is None:
            self._ring.create(name, key_type, new_material(key_type))
            return True
        if existing != key_type:
            msg = f"local key {name!r} is of type {existing}, configuration asks for {key_type}"
            raise KeyStateError(msg)
        return False

    def _envelope_key(self, key_id: str) -> str:
        key_type = self._ring.key_type(key_id)
        if key_type is None:
            raise KmsKeyNotFoundError
        if key_type != "aes-256":
            raise KeyStateError("key is not an envelope key")
        return key_id

    def _cipher(self, name: str, version: int) -> AESGCM | None:
        cipher = self._ciphers.get((name, version))
        if cipher is None:
            material = self._ring.material(name, version)
            if material is None:
                return None
            cipher = AESGCM(bytes(material))
            material[:] = bytes(len(material))
            self._ciphers[(name, version)] = cipher
        return cipher

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """Draw 32 bytes from the OS CSPRNG and wrap them."""
        dek = bytearray(os.urandom(32))
        wrapped = await self.wrap(key_id, bytes(dek), context)
        return GeneratedKey(dek, wrapped.wrapped, wrapped.key_version)

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Seal a DEK under the current version."""
        name = self._envelope_key(key_id)
        version = self._ring.current_version(name)
        if not self._ring.is_enabled(name, version):
            raise KeyStateError("current key version is disabled; rotate the key")
        cipher = self._cipher(name, version)
        if cipher is None:  # pragma: no cover - the current version always exists
            raise KmsKeyNotFoundError
        nonce = os.urandom(_NONCE)
        sealed = cipher.encrypt(nonce, dek, _aad(name, version, context))
        return WrappedKey(nonce + sealed, version)

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Open a wrapped DEK; any mismatch is an invalid ciphertext."""
        name = self._envelope_key(key_id)
        cipher = self._cipher(name, key_version)
        if cipher is None or len(wrapped) != _WRAPPED_LEN:
            raise KmsInvalidCiphertextError
        if not self._ring.is_enabled(name, key_version):
            raise KeyStateError
        try:
            aad = _aad(name, key_version, context)
            return bytearray(cipher.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad))
        except InvalidTag:
            raise KmsInvalidCiphertextError from None

    def _describe(self, name: str) -> BackendKey:
        key_type = self._ring.key_type(name)
        if key_type is None:
            raise KmsKeyNotFoundError
        versions = tuple(
            KeyVersionInfo(m.version, "enabled" if m.enabled else "disabled", m.created)
            for m in self._ring.versions(name)
        )
        return BackendKey(
            key_id=name,
            current_version=self._ring.current_version(name),
            versions=versions,
            algorithm=KEY_TYPES[key_type],
        )

    async def describe_key(self, key_id: str) -> BackendKey:
        """Metadata and versions from the keyring."""
        return self._describe(key_id)

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Add a version with fresh material; it becomes current."""
        async with self._lock:
            key_type = self._ring.key_type(key_id)
            if key_type is None:
                raise KmsKeyNotFoundError
            material = await asyncio.to_thread(new_material, key_type)  # RSA takes ~1 s
            await asyncio.to_thread(self._ring.add_version, key_id, material)
            return self._describe(key_id)

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Enable or disable a version; the current version cannot be disabled."""
        async with self._lock:
            if self._ring.key_type(key_id) is None:
                raise KmsKeyNotFoundError
            if not enabled and version == self._ring.current_version(key_id):
                raise KeyStateError("the current version cannot be disabled; rotate the key first")
            meta = await asyncio.to_thread(self._ring.set_enabled, key_id, version, enabled=enabled)
            if meta is None:
                raise KeyStateError("no such key version")
            return KeyVersionInfo(
                meta.version, "enabled" if meta.enabled else "disabled", meta.created
            )

    async def health(self) -> None:
        """The keyring is in memory; always healthy once opened."""

    async def close(self) -> None:
        """Drop cached ciphers and loaded keys."""
        self._ciphers.clear()
        self.forget_keys()
