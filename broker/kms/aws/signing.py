"""Signing with asymmetric AWS KMS keys: the private key never leaves KMS.

`AwsKmsBackend` lends this module its `_call` (KMS API call on the backend's threads, errors
already mapped), so boto3 stays imported in `_sdk.py` alone. The SigningAlgorithm follows the
key's spec (table below); KMS keeps one immutable key pair per asymmetric key, so its only
version is 0.

| KMS KeySpec    | broker algorithm      | KMS SigningAlgorithm |
|----------------|-----------------------|----------------------|
| ECC_NIST_P384  | ecdsa-p384-sha384     | ECDSA_SHA_384        |
| ECC_NIST_P256  | ecdsa-p256-sha256     | ECDSA_SHA_256        |
| RSA_3072       | rsa-pss-3072-sha256   | RSASSA_PSS_SHA_256   |
| RSA_4096       | rsa-pss-4096-sha256   | RSASSA_PSS_SHA_256   |

Messages of 1..4096 bytes are sent as MessageType RAW; longer (or empty) ones are hashed here
and sent as DIGEST, since KMS refuses RAW input outside that range. A caller's digest is DIGEST.

Verification runs here with the key's public key, cached per key id for five minutes. For
ECDSA and RSA-PSS (salt = digest length, as KMS signs) that is the computation KMS Verify
does with the same public key, so it saves a KMS call per signature and needs no kms:Verify
permission. What it does not see: a key disabled in KMS still verifies (its public key is
public; anyone can verify with it), and an alias moved to another key is followed once the
cached public key expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from broker.core import signatures
from broker.errors import (
    InvalidRequestError,
    KeyStateError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.kms import delegated
from broker.kms.base import PublicKeyInfo, SignResult

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = ["MAX_RAW_MESSAGE", "PUBLIC_KEY_TTL", "AwsSigning", "signing_algorithm"]

# KMS KeySpec -> (broker algorithm, KMS SigningAlgorithm)
_SPECS: Final = {
    "ECC_NIST_P384": ("ecdsa-p384-sha384", "ECDSA_SHA_384"),
    "ECC_NIST_P256": ("ecdsa-p256-sha256", "ECDSA_SHA_256"),
    "RSA_3072": ("rsa-pss-3072-sha256", "RSASSA_PSS_SHA_256"),
    "RSA_4096": ("rsa-pss-4096-sha256", "RSASSA_PSS_SHA_256"),
}
MAX_RAW_MESSAGE: Final = 4096
PUBLIC_KEY_TTL: Final = 300.0
_NOT_SIGNING = "the KMS key is not an asymmetric signing key (KeyUsage SIGN_VERIFY)"


def signing_algorithm(key_spec: str) -> str | None:
    """The broker algorithm of a KMS key spec, None when the broker cannot sign with it."""
    entry = _SPECS.get(key_spec)
    return None if entry is None else entry[0]


@dataclass(frozen=True, slots=True)
class _SigningKey:
    """What the broker keeps about one KMS signing key: public material only."""

    algorithm: str
    kms_algorithm: str
    pem: str
    public: signatures.PublicKey
    fetched: float


def _signing_key(response: Mapping[str, Any], now: float) -> _SigningKey:
    """Read a GetPublicKey answer; refuse keys that do not sign or use an unsupported spec."""
    if response.get("KeyUsage") != "SIGN_VERIFY":
        raise WrongKeyPurposeError(_NOT_SIGNING)
    spec = str(response.get("KeySpec") or response.get("CustomerMasterKeySpec") or "")
    if spec not in _SPECS:
        supported = ", ".join(_SPECS)
        raise WrongKeyPurposeError(f"KMS key spec {spec or '?'} cannot sign here; use {supported}")
    algorithm, kms_algorithm = _SPECS[spec]
    pem = delegated.pem_from_der(bytes(response["PublicKey"]))
    return _SigningKey(algorithm, kms_algorithm, pem, signatures.load_public_key(pem), now)


def _only_version_zero(key_version: int) -> None:
    """KMS asymmetric keys never rotate: any version but 0 (= the key) does not exist."""
    if key_version != 0:
        raise KeyStateError("no such key version: AWS KMS keys have only version 0")


class AwsSigning:
    """Sign, verify and public keys of asymmetric KMS keys, through the backend's API calls."""

    def __init__(
        self,
        call: Callable[..., Awaitable[dict[str, Any]]],
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = PUBLIC_KEY_TTL,
    ) -> None:
        """`call(operation, **params)` runs one KMS API call with errors mapped."""
        self._call = call
        self._clock = clock
        self._ttl = ttl
        self._keys: dict[str, _SigningKey] = {}

    async def _key(self, key_id: str) -> _SigningKey:
        """The key's spec and public key: cached, fetched with GetPublicKey when stale."""
        cached = self._keys.get(key_id)
        if cached is not None and self._clock() - cached.fetched < self._ttl:
            return cached
        try:
            response = await self._call("get_public_key", KeyId=key_id)
        except WrongKeyPurposeError:  # symmetric keys have no public key
            raise WrongKeyPurposeError(_NOT_SIGNING) from None
        key = self._keys[key_id] = _signing_key(response, self._clock())
        return key

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """The key's public half as PEM (version 0 is the only one)."""
        _only_version_zero(key_version)
        key = await self._key(key_id)
        return PublicKeyInfo(key.pem, 0, key.algorithm)

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """KMS Sign; messages KMS refuses as RAW are hashed here and sent as DIGEST."""
        key = await self._key(key_id)
        delegated.check_input(key.algorithm, message, prehashed=prehashed)
        if not prehashed and not 0 < len(message) <= MAX_RAW_MESSAGE:
            message, prehashed = delegated.digest(key.algorithm, message), True
        response = await self._call(
            "sign",
            KeyId=key_id,
            Message=message,
            MessageType="DIGEST" if prehashed else "RAW",
            SigningAlgorithm=key.kms_algorithm,
        )
        return SignResult(bytes(response["Signature"]), 0, key.algorithm)

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """Check the signature with the cached public key (no KMS call once it is cached)."""
        _only_version_zero(key_version)
        key = await self._key(key_id)
        try:
            signatures.verify(key.public, key.algorithm, signature, message, prehashed=prehashed)
        except signatures.InvalidSignatureError:
            raise VerificationFailedError from None
        except signatures.SignatureInputError as exc:
            raise InvalidRequestError(str(exc)) from None
        return 0
