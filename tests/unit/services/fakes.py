"""In-memory fakes of the narrow interfaces services declare: KMS, policy, audit and clock.

Each fake does the real cryptography (AES-GCM wrapping, ECDSA, HMAC, HKDF, RSA-OAEP) under
keys held in memory per version, so a service test checks real round trips without a daemon.
Every backend counts its calls, can be switched `down` (KmsUnavailableError) and can be made
slow with `gate` (an asyncio.Event every call waits for), which is how single-flight is tested.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.core import asymmetric, kdf, macs, signatures
from broker.core.context import canonical_context
from broker.errors import (
    DecryptionFailedError,
    InvalidRequestError,
    KeyStateError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    PermissionDeniedError,
    VerificationFailedError,
)
from broker.kms.base import (
    BackendKey,
    Decryption,
    DerivedSecret,
    GeneratedKey,
    KeyVersionInfo,
    MacResult,
    PublicKeyInfo,
    SignResult,
    WrappedKey,
)
from broker.policy.authorizer import Caller
from broker.services.keys import KeyRegistry, ResolvedKey

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

CALLER = Caller(kind="unix", name="app")
SIGNING_ALGORITHM = "ecdsa-p256-sha256"
RSA_ALGORITHM = "rsa-oaep-2048-sha256"
_NONCE = 12


class FakeClock:
    """Time that moves only when a test moves it; serves as monotonic and wall clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        """Start at a fixed instant."""
        self.now = now

    def __call__(self) -> float:
        """Read the time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass(frozen=True, slots=True)
class Decision:
    """One question put to the authorizer and its answer."""

    caller: Caller
    key: str
    operation: str
    context: dict[str, str]
    allowed: bool


class RecordingAuthorizer:
    """Allows everything except denied (operation, key) pairs; records every decision."""

    def __init__(self) -> None:
        """Start allowing everything."""
        self.denied: set[tuple[str, str]] = set()
        self.decisions: list[Decision] = []

    def deny(self, *, operation: str = "*", key: str = "*") -> None:
        """Deny an operation on a key; "*" matches any."""
        self.denied.add((operation, key))

    def authorize(
        self, caller: Caller, *, key: str, operation: str, context: Mapping[str, str]
    ) -> None:
        """Record the decision; raise PermissionDeniedError when a rule denies it."""
        rules = {(operation, key), ("*", key), (operation, "*"), ("*", "*")}
        allowed = not rules & self.denied
        self.decisions.append(Decision(caller, key, operation, dict(context), allowed))
        if not allowed:
            raise PermissionDeniedError


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One item outcome as a service reported it."""

    operation: str
    key: str
    key_version: int
    error: BaseException | None


class RecordingAudit:
    """An AuditSink keeping every item outcome in order."""

    def __init__(self) -> None:
        """Start empty."""
        self.records: list[AuditRecord] = []

    def item(
        self, operation: str, *, key: str, key_version: int, error: BaseException | None
    ) -> None:
        """Keep the outcome."""
        self.records.append(AuditRecord(operation, key, key_version, error))

    def errors(self) -> list[type[BaseException]]:
        """The error classes recorded, in order (None entries skipped)."""
        return [type(r.error) for r in self.records if r.error is not None]


class _VersionedKeys:
    """Key versions in memory, rotation, enable/disable, call counts, outage and slowness."""

    scheme = "fake"

    def __init__(self, *key_ids: str) -> None:
        """Create each key with one enabled version."""
        self.calls: collections.Counter[str] = collections.Counter()
        self.down = False
        self.gate: asyncio.Event | None = None
        self._versions: dict[str, dict[int, Any]] = {}
        self._disabled: set[tuple[str, int]] = set()
        for key_id in key_ids:
            self._versions[key_id] = {1: self._new_material()}

    def _new_material(self) -> Any:
        raise NotImplementedError

    async def _enter(self, method: str) -> None:
        """Count the call, wait at the gate if one is set, then fail if the KMS is down."""
        self.calls[method] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise KmsUnavailableError

    def _key(self, key_id: str) -> dict[int, Any]:
        versions = self._versions.get(key_id)
        if versions is None:
            raise KmsKeyNotFoundError
        return versions

    def current(self, key_id: str) -> int:
        """The version new operations use."""
        return max(self._key(key_id))

    def _material(self, key_id: str, version: int) -> Any:
        """The material of a version (0 = current); KeyStateError when disabled or absent."""
        versions = self._key(key_id)
        version = version or max(versions)
        if version not in versions:
            raise KeyStateError("no such key version")
        if (key_id, version) in self._disabled:
            raise KeyStateError
        return versions[version]

    def _candidates(self, key_id: str, version: int) -> list[int]:
        """One requested version, or every enabled one, newest first."""
        if version:
            self._material(key_id, version)
            return [version]
        return [
            v for v in sorted(self._key(key_id), reverse=True) if (key_id, v) not in self._disabled
        ]

    def _describe(self, key_id: str) -> BackendKey:
        versions = tuple(
            KeyVersionInfo(v, "disabled" if (key_id, v) in self._disabled else "enabled")
            for v in sorted(self._key(key_id))
        )
        return BackendKey(key_id=key_id, current_version=self.current(key_id), versions=versions)

    async def describe_key(self, key_id: str) -> BackendKey:
        """Metadata and versions."""
        await self._enter("describe_key")
        return self._describe(key_id)

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Add a version with fresh material; it becomes current."""
        await self._enter("rotate_key")
        versions = self._key(key_id)
        versions[max(versions) + 1] = self._new_material()
        return self._describe(key_id)

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Enable or disable one version."""
        await self._enter("set_version_state")
        if version not in self._key(key_id):
            raise KeyStateError("no such key version")
        if enabled:
            self._disabled.discard((key_id, version))
        else:
            self._disabled.add((key_id, version))
        return KeyVersionInfo(version, "enabled" if enabled else "disabled")

    async def health(self) -> None:
        """Fail when down."""
        await self._enter("health")

    async def close(self) -> None:
        """Nothing to release."""


def _wrap_aad(key_id: str, version: int, context: Mapping[str, str]) -> bytes:
    name = key_id.encode()
    return (
        struct.pack(">H", len(name))
        + name
        + struct.pack(">I", version)
        + canonical_context(context)
    )


class FakeKms(_VersionedKeys):
    """A KmsBackend wrapping DEKs with AES-256-GCM, binding key, version and context as AAD."""

    def _new_material(self) -> AESGCM:
        return AESGCM(AESGCM.generate_key(bit_length=256))

    def _seal(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        version = self.current(key_id)
        cipher: AESGCM = self._material(key_id, version)
        nonce = os.urandom(_NONCE)
        sealed = cipher.encrypt(nonce, dek, _wrap_aad(key_id, version, context))
        return WrappedKey(nonce + sealed, version)

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """A random DEK wrapped under the current version."""
        await self._enter("generate_data_key")
        dek = os.urandom(32)
        wrapped = self._seal(key_id, dek, context)
        return GeneratedKey(bytearray(dek), wrapped.wrapped, wrapped.key_version)

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Wrap a caller's DEK under the current version."""
        await self._enter("wrap")
        return self._seal(key_id, dek, context)

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Open a wrapped DEK; any mismatch is KmsInvalidCiphertextError."""
        await self._enter("unwrap")
        if key_version not in self._key(key_id):
            raise KmsInvalidCiphertextError
        cipher: AESGCM = self._material(key_id, key_version)
        aad = _wrap_aad(key_id, key_version, context)
        try:
            return bytearray(cipher.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad))
        except InvalidTag:
            raise KmsInvalidCiphertextError from None


class FakeSigner(_VersionedKeys):
    """A SigningBackend holding ECDSA P-256 keys."""

    def _new_material(self) -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """The PEM public half of a version (0 = current)."""
        await self._enter("public_key")
        version = key_version or self.current(key_id)
        pem = signatures.public_pem(self._material(key_id, version))
        return PublicKeyInfo(pem, version, SIGNING_ALGORITHM)

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """Sign with the current version."""
        await self._enter("sign")
        version = self.current(key_id)
        key = self._material(key_id, version)
        try:
            signature = signatures.sign(key, SIGNING_ALGORITHM, message, prehashed=prehashed)
        except signatures.SignatureInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        return SignResult(signature, version, SIGNING_ALGORITHM)

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """The version that verifies the signature (0 tries every enabled one)."""
        await self._enter("verify")
        for version in self._candidates(key_id, key_version):
            public = self._material(key_id, version).public_key()
            try:
                signatures.verify(
                    public, SIGNING_ALGORITHM, signature, message, prehashed=prehashed
                )
            except signatures.InvalidSignatureError:
                continue
            except signatures.SignatureInputError as exc:
                raise InvalidRequestError(str(exc)) from None
            return version
        raise VerificationFailedError


class FakeMacKeys(_VersionedKeys):
    """A MacBackend holding HMAC-SHA256 keys."""

    def _new_material(self) -> bytes:
        return os.urandom(32)

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """HMAC-SHA256 under a version (0 = current)."""
        await self._enter("mac")
        version = key_version or self.current(key_id)
        return MacResult(macs.hmac_sha256(self._material(key_id, version), data), version)

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """The version whose key made the MAC."""
        await self._enter("verify_mac")
        for version in self._candidates(key_id, key_version):
            try:
                macs.verify_hmac_sha256(self._material(key_id, version), data, mac)
            except macs.MacMismatchError:
                continue
            return version
        raise VerificationFailedError

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """An HMAC under a key derived for the label from the current version."""
        await self._enter("derived_mac")
        version = self.current(key_id)
        mac = macs.derived_mac(self._material(key_id, version), label, data, length)
        return MacResult(mac, version)


class FakeSecrets(_VersionedKeys):
    """A SecretBackend holding HKDF input secrets."""

    def _new_material(self) -> bytes:
        return os.urandom(32)

    async def derive(self, key_id: str, *, salt: bytes, info: bytes, length: int) -> DerivedSecret:
        """HKDF-SHA256 from the current version."""
        await self._enter("derive")
        version = self.current(key_id)
        secret = self._material(key_id, version)
        return DerivedSecret(kdf.hkdf_sha256(secret, salt=salt, info=info, length=length), version)


@functools.cache
def _rsa_key(index: int) -> rsa.RSAPrivateKey:
    """RSA-2048 keys, made once per test session: generation is the slow part of RSA."""
    del index
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeRsa(_VersionedKeys):
    """A DecryptionBackend holding RSA-2048 OAEP keys (smaller than production, for speed)."""

    def __init__(self, *key_ids: str) -> None:
        """Number the keys so instances reuse the session's RSA keys."""
        self._made = 0
        super().__init__(*key_ids)

    def _new_material(self) -> rsa.RSAPrivateKey:
        self._made += 1
        return _rsa_key(self._made)

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """The PEM public half of a version (0 = current)."""
        await self._enter("public_key")
        version = key_version or self.current(key_id)
        pem = asymmetric.public_pem(self._material(key_id, version))
        return PublicKeyInfo(pem, version, RSA_ALGORITHM)

    async def decrypt(
        self, key_id: str, key_version: int, ciphertext: bytes, label: bytes
    ) -> Decryption:
        """OAEP-decrypt with a version (0 = current); any failure is DecryptionFailedError."""
        await self._enter("decrypt")
        version = key_version or self.current(key_id)
        key = self._material(key_id, version)
        try:
            return Decryption(asymmetric.decrypt(key, ciphertext, label), version)
        except asymmetric.OaepDecryptionError:
            raise DecryptionFailedError from None


def resolved(name: str, backend: Any, purpose: str, key_id: str = "") -> ResolvedKey:
    """A logical key bound to a fake backend."""
    key_id = key_id or f"kek-{name}"
    return ResolvedKey(name, f"fake://{key_id}", purpose, backend, key_id)


@dataclass
class Fakes:
    """Every fake a service needs, wired to one registry of logical keys.

    Keys: `default` and `payments` (envelope), `signing`, `hmac`, `secret` (derivation),
    `rsa` (asymmetric_decrypt), and `odd-signer`: a signing key whose backend cannot sign.
    """

    clock: FakeClock = field(default_factory=FakeClock)
    kms: FakeKms = field(default_factory=lambda: FakeKms("kek-default", "kek-payments"))
    signer: FakeSigner = field(default_factory=lambda: FakeSigner("kek-signing"))
    macs: FakeMacKeys = field(default_factory=lambda: FakeMacKeys("kek-hmac"))
    secrets: FakeSecrets = field(default_factory=lambda: FakeSecrets("kek-secret"))
    rsa: FakeRsa = field(default_factory=lambda: FakeRsa("kek-rsa"))
    authz: RecordingAuthorizer = field(default_factory=RecordingAuthorizer)
    audit: RecordingAudit = field(default_factory=RecordingAudit)

    def resolved_keys(self) -> list[ResolvedKey]:
        """The logical keys, bound to their fake backends."""
        return [
            resolved("default", self.kms, "envelope"),
            resolved("payments", self.kms, "envelope"),
            resolved("signing", self.signer, "signing"),
            resolved("hmac", self.macs, "hmac"),
            resolved("secret", self.secrets, "derivation"),
            resolved("rsa", self.rsa, "asymmetric_decrypt"),
            resolved("odd-signer", self.kms, "signing", "kek-default"),
        ]

    def registry(self, without: Iterable[str] = ()) -> KeyRegistry:
        """A KeyRegistry of the logical keys, leaving out the names given."""
        skip = set(without)
        return KeyRegistry({k.name: k for k in self.resolved_keys() if k.name not in skip})

    def backends(self) -> list[_VersionedKeys]:
        """Every fake backend."""
        return [self.kms, self.signer, self.macs, self.secrets, self.rsa]

    def kms_calls(self) -> int:
        """Calls made to any backend so far."""
        return sum(sum(b.calls.values()) for b in self.backends())


async def settle(rounds: int = 20) -> None:
    """Let every runnable task advance until it blocks."""
    for _ in range(rounds):
        await asyncio.sleep(0)
