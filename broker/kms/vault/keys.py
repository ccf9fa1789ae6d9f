"""Transit key metadata and ciphertext formats, parsed apart from backend.py's HTTP calls."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from broker.core.context import EMPTY_CONTEXT
from broker.errors import KeyStateError, KmsError, KmsInvalidCiphertextError, KmsKeyNotFoundError
from broker.kms.base import BackendKey, KeyVersionInfo
from broker.kms.vault.signing import ALGORITHMS

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "KeyTraits",
    "b64decode",
    "backend_key",
    "ciphertext_version",
    "new_min_decryption",
    "parse_wrapped",
    "traits_of",
]

_CIPHERTEXT = re.compile(r"vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/=]+")
_AEAD_TYPES = frozenset({"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305"})


@dataclass(frozen=True, slots=True)
class KeyTraits:
    """What decides how a transit key can bind the context."""

    aead: bool
    derived: bool
    encrypts: bool

    def context_params(self, context: bytes) -> dict[str, str]:
        """Derived keys take the encoded context as derivation context, AEAD keys as AAD."""
        blob = base64.b64encode(context).decode()
        if self.derived:
            return {"context": blob}
        if self.aead and context != EMPTY_CONTEXT:
            return {"associated_data": blob}
        return {}


def traits_of(data: Mapping[str, Any]) -> KeyTraits:
    """Read the traits from a `keys/NAME` response."""
    return KeyTraits(
        aead=data.get("type") in _AEAD_TYPES,
        derived=bool(data.get("derived")),
        encrypts=bool(data.get("supports_encryption", True)),
    )


def _created(value: Any) -> datetime | None:  # noqa: ANN401 - Vault returns int or a dict
    """Symmetric keys list a Unix time per version, asymmetric ones a dict with an ISO time."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, dict) and isinstance(value.get("creation_time"), str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value["creation_time"])
    return None


def backend_key(key_id: str, data: Mapping[str, Any]) -> BackendKey:
    """Versions below `min_decryption_version` refuse to unwrap: they are reported disabled."""
    latest = int(data["latest_version"])
    lowest_enabled = int(data.get("min_decryption_version") or 1)
    first = max(1, int(data.get("min_available_version") or 1))
    times = data.get("keys") or {}
    versions = tuple(
        KeyVersionInfo(
            version=v,
            state="enabled" if v >= lowest_enabled else "disabled",
            created=_created(times.get(str(v))),
        )
        for v in range(first, latest + 1)
    )
    key_type = str(data.get("type", ""))
    algorithm = "aes-256-gcm" if key_type == "aes256-gcm96" else ALGORITHMS.get(key_type, key_type)
    return BackendKey(key_id=key_id, current_version=latest, versions=versions, algorithm=algorithm)


def parse_wrapped(wrapped: bytes) -> str:
    """Check a wrapped DEK looks like a Transit ciphertext before sending it anywhere."""
    try:
        text = bytes(wrapped).decode("ascii")
    except UnicodeDecodeError as exc:
        raise KmsInvalidCiphertextError from exc
    if not _CIPHERTEXT.fullmatch(text):
        raise KmsInvalidCiphertextError
    return text


def ciphertext_version(ciphertext: str) -> int:
    """The key version is the `vN` of `vault:vN:...`."""
    match = _CIPHERTEXT.fullmatch(ciphertext)
    if match is None:
        raise KmsError
    return int(match.group(1))


def b64decode(value: str) -> bytearray:
    """Decode a plaintext the server returned into a wipeable buffer."""
    try:
        return bytearray(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise KmsError from exc


def new_min_decryption(data: Mapping[str, Any], version: int, *, enabled: bool) -> int | None:
    """The min_decryption_version that enables/disables `version`, None if already so."""
    latest = int(data["latest_version"])
    lowest = int(data.get("min_decryption_version") or 1)
    if not max(1, int(data.get("min_available_version") or 1)) <= version <= latest:
        raise KmsKeyNotFoundError("key version not found")
    if (version >= lowest) == enabled:
        return None
    if enabled:
        if version != lowest - 1:
            msg = f"only version {lowest - 1} can be enabled: Vault enables versions newest first"
            raise KeyStateError(msg)
        return version
    if version != lowest:
        msg = f"only version {lowest} can be disabled: Vault disables versions oldest first"
        raise KeyStateError(msg)
    if version == latest:
        raise KeyStateError("the current version cannot be disabled: rotate the key first")
    return version + 1
