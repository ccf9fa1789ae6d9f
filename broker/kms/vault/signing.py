"""Signing with Vault/OpenBao transit keys: transit `sign`, `verify` and `keys/NAME`.

`VaultTransitBackend` lends this module its worker-thread runner and HTTP helpers, so hvac
stays imported in `_sdk.py` alone. Parameters follow the key's type, so that signatures
are the same bytes a local key of that algorithm makes:

| transit type | broker algorithm    | request parameters                                    |
|--------------|---------------------|-------------------------------------------------------|
| ecdsa-p384   | ecdsa-p384-sha384   | hash_algorithm=sha2-384, marshaling_algorithm=asn1    |
| ecdsa-p256   | ecdsa-p256-sha256   | hash_algorithm=sha2-256, marshaling_algorithm=asn1    |
| ed25519      | ed25519             | (messages only)                                       |
| rsa-3072/4096| rsa-pss-N-sha256    | hash_algorithm=sha2-256, signature_algorithm=pss,     |
|              |                     | salt_length=hash                                      |

Transit answers `vault:vN:BASE64`; the broker returns the raw signature (DER for ECDSA) and
carries N as the key version, and puts the prefix back to verify. Verification is Vault's
own (`verify` with a batch of one item per candidate version), so its version policy
(`min_decryption_version`) applies; with version 0 the candidates come from `keys/NAME`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from broker.errors import KeyStateError, KmsError, VerificationFailedError, WrongKeyPurposeError
from broker.kms import delegated
from broker.kms.base import PublicKeyInfo, SignResult

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

__all__ = [
    "ALGORITHMS",
    "Runner",
    "VaultSigning",
    "b64",
    "check_verified",
    "enabled_versions",
    "parse_prefixed",
    "usable_version",
]

_T = TypeVar("_T")
_PREFIXED = re.compile(r"vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]*={0,2})")
_PSS: Final = {"hash_algorithm": "sha2-256", "signature_algorithm": "pss", "salt_length": "hash"}


@dataclass(frozen=True, slots=True)
class _Kind:
    """How to sign with one transit key type."""

    algorithm: str
    params: Mapping[str, str] = field(default_factory=dict)


_KINDS: Final = {
    "ecdsa-p384": _Kind(
        "ecdsa-p384-sha384", {"hash_algorithm": "sha2-384", "marshaling_algorithm": "asn1"}
    ),
    "ecdsa-p256": _Kind(
        "ecdsa-p256-sha256", {"hash_algorithm": "sha2-256", "marshaling_algorithm": "asn1"}
    ),
    "ed25519": _Kind("ed25519"),
    "rsa-3072": _Kind("rsa-pss-3072-sha256", _PSS),
    "rsa-4096": _Kind("rsa-pss-4096-sha256", _PSS),
}
# transit key type -> broker algorithm (for DescribeKey)
ALGORITHMS: Final = {key_type: kind.algorithm for key_type, kind in _KINDS.items()}


class Runner(Protocol):
    """Runs a blocking operation on the backend's threads, with its auth and error mapping."""

    def __call__(self, operation: Callable[[], _T], /) -> Awaitable[_T]:
        """The operation's result; SDK errors arrive as broker errors."""
        ...


@dataclass
class TransitPart:
    """A slice of the transit backend, borrowing its runner, POST, `keys/NAME` reader and parser."""

    _run: Runner
    _post: Callable[[str, Mapping[str, Any]], dict[str, Any]]
    _read_key: Callable[[str], dict[str, Any]]
    _split: Callable[[str], tuple[str, str]]


def b64(data: bytes) -> str:
    """Standard base64 text, as every transit field takes binary data."""
    return base64.b64encode(data).decode("ascii")


def parse_prefixed(text: str) -> tuple[int, bytes]:
    """Split `vault:vN:BASE64` into (N, bytes); KmsError when Vault answered something else."""
    match = _PREFIXED.fullmatch(text)
    if match is None:
        raise KmsError("the KMS returned a malformed signature or MAC")
    try:
        return int(match.group(1)), base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KmsError("the KMS returned a malformed signature or MAC") from exc


def _bounds(data: Mapping[str, Any]) -> tuple[int, int, int]:
    """(first existing, lowest enabled, latest) version of a `keys/NAME` answer."""
    first = max(1, int(data.get("min_available_version") or 1))
    lowest = max(first, int(data.get("min_decryption_version") or 1))
    return first, lowest, int(data["latest_version"])


def enabled_versions(data: Mapping[str, Any]) -> list[int]:
    """Versions Vault still verifies with, newest first."""
    _, lowest, latest = _bounds(data)
    return list(range(latest, lowest - 1, -1))


def usable_version(data: Mapping[str, Any], key_version: int) -> int:
    """The version to use (0 = latest); KeyStateError when it is absent or disabled."""
    first, lowest, latest = _bounds(data)
    version = key_version or latest
    if not first <= version <= latest:
        raise KeyStateError("no such key version")
    if version < lowest:
        raise KeyStateError
    return version


def check_verified(versions: Sequence[int], results: Sequence[Mapping[str, Any]]) -> int:
    """The first version Vault found valid; one asked-for version may be absent or disabled."""
    for version, result in zip(versions, results, strict=False):
        if result.get("valid") is True:
            return version
    if len(versions) == 1 and results:
        error = str(results[0].get("error", ""))
        if "too new" in error:
            raise KeyStateError("no such key version")
        if "too old" in error or "disallowed by policy" in error:
            raise KeyStateError
    raise VerificationFailedError


def _kind_of(data: Mapping[str, Any]) -> _Kind:
    """The signing parameters of a transit key; WrongKeyPurposeError for keys that cannot sign."""
    kind = _KINDS.get(str(data.get("type", "")))
    if kind is None:
        supported = ", ".join(_KINDS)
        raise WrongKeyPurposeError(f"the transit key is not a signing key ({supported})")
    if data.get("derived"):
        raise WrongKeyPurposeError("derived transit keys need a context; they cannot sign here")
    return kind


def _pem(kind: _Kind, entry: object) -> str:
    """The PEM of one version's `public_key` (Vault gives Ed25519 keys as raw base64)."""
    public = entry.get("public_key") if isinstance(entry, dict) else None
    if not isinstance(public, str):
        raise KmsError("the KMS returned no public key for this version")
    if kind.algorithm != "ed25519":
        return delegated.pem_from_pem(public)
    try:
        return delegated.pem_from_ed25519(base64.b64decode(public, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise KmsError("the KMS returned an unreadable public key") from exc


@dataclass
class VaultSigning(TransitPart):
    """Transit sign/verify and public keys; runs every request through the backend."""

    _kinds: dict[str, _Kind] = field(default_factory=dict, init=False)

    def _kind(self, key_id: str) -> _Kind:
        """A key's type never changes: read it once (on a worker thread)."""
        kind = self._kinds.get(key_id)
        return self._remember(key_id, self._read_key(key_id)) if kind is None else kind

    def _remember(self, key_id: str, data: Mapping[str, Any]) -> _Kind:
        """The signing parameters of a fresh `keys/NAME` answer, kept for later calls."""
        kind = self._kinds[key_id] = _kind_of(data)
        return kind

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """`keys/NAME`: the public key of a version (0 = latest) that Vault still accepts."""
        data = await self._run(lambda: self._read_key(key_id))
        kind = self._remember(key_id, data)
        version = usable_version(data, key_version)
        pem = _pem(kind, (data.get("keys") or {}).get(str(version)))
        return PublicKeyInfo(pem, version, kind.algorithm)

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """`sign/NAME` with the latest version; the `vault:vN:` prefix becomes the version."""
        mount, name = self._split(key_id)

        def operation() -> tuple[_Kind, str]:
            kind = self._kind(key_id)
            delegated.check_input(kind.algorithm, message, prehashed=prehashed)
            body = {"input": b64(message), "prehashed": prehashed, **kind.params}
            return kind, str(self._post(f"{mount}/sign/{name}", body)["data"]["signature"])

        kind, text = await self._run(operation)
        version, signature = parse_prefixed(text)
        return SignResult(signature, version, kind.algorithm)

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """`verify/NAME` for one version, or for every enabled version in one batch."""
        mount, name = self._split(key_id)
        given, proof = b64(message), b64(signature)

        def operation() -> tuple[list[int], list[dict[str, Any]]]:
            if key_version:
                kind, versions = self._kind(key_id), [key_version]
            else:  # one read gives both the type and the enabled versions
                data = self._read_key(key_id)
                kind, versions = self._remember(key_id, data), enabled_versions(data)
            delegated.check_input(kind.algorithm, message, prehashed=prehashed)
            batch = [{"input": given, "signature": f"vault:v{v}:{proof}"} for v in versions]
            body = {"batch_input": batch, "prehashed": prehashed, **kind.params}
            results = self._post(f"{mount}/verify/{name}", body)["data"]["batch_results"]
            return versions, list(results)

        versions, results = await self._run(operation)
        return check_verified(versions, results)
