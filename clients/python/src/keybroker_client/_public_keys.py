"""Offline RSA-OAEP: encrypt under a broker key's public half without a round trip per message.

Encryption needs only the public key, so the client fetches it once with GetPublicKey and
encrypts locally with RSA-OAEP (SHA-256, MGF1-SHA-256, no label), exactly what the broker's
AsymmetricEncrypt does; only the broker can decrypt. Public keys are cached per (key,
version); which version is current is asked again after ``ttl`` seconds, so a rotation
reaches this client within that time.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._errors import EncryptionError, InvalidParameterError
from ._gen import signing_pb2 as sig_pb

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_PUBLIC_KEY_TTL", "PublicKeyCache", "oaep_encrypt"]

DEFAULT_PUBLIC_KEY_TTL: Final = 300.0
_MAX_ENTRIES: Final = 256
_SHA256_SIZE: Final = 32
_OAEP_OVERHEAD: Final = 2 * _SHA256_SIZE + 2  # RFC 8017 §7.1.1: k - 2hLen - 2 bytes fit
_K = TypeVar("_K")
_V = TypeVar("_V")


def _oaep() -> padding.OAEP:
    """The broker's padding: OAEP with SHA-256 and MGF1-SHA-256, no label."""
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _encryption_key(response: sig_pb.GetPublicKeyResponse) -> rsa.RSAPublicKey | None:
    """Return the RSA key if it is a decryption key; None lets the broker decide (and refuse).

    Signing keys report their signature algorithm, and an RSA-PSS signing key must not
    be used to encrypt, so only keys without one qualify.
    """
    if response.algorithm != sig_pb.SIGNATURE_ALGORITHM_UNSPECIFIED:
        return None
    try:
        public_key = serialization.load_pem_public_key(response.pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    return public_key if isinstance(public_key, rsa.RSAPublicKey) else None


class PublicKeyCache:
    """RSA public keys by (key, version), plus which version is current, thread-safe."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_PUBLIC_KEY_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start empty; ttl and clock are injectable so tests need not wait."""
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._current: dict[str, tuple[int, float]] = {}
        self._keys: dict[tuple[str, int], rsa.RSAPublicKey] = {}

    def get(self, key: str) -> rsa.RSAPublicKey | None:
        """The current version's public key, or None when unknown or due for a refresh."""
        with self._lock:
            current = self._current.get(key)
            if current is None or self._clock() - current[1] >= self._ttl:
                return None
            return self._keys.get((key, current[0]))

    def put(self, key: str, response: sig_pb.GetPublicKeyResponse) -> rsa.RSAPublicKey | None:
        """Remember the broker's answer; None when the key cannot encrypt offline."""
        version = response.key_version
        with self._lock:
            public_key = self._keys.get((key, version))
        if public_key is None:
            public_key = _encryption_key(response)
            if public_key is None:
                return None
        with self._lock:
            self._keys[(key, version)] = public_key
            self._current[key] = (version, self._clock())
            _trim(self._keys)
            _trim(self._current)
        return public_key

    def forget(self, key: str) -> None:
        """Drop one key's versions, so the next rsa_encrypt asks the broker (after a rotation)."""
        with self._lock:
            self._current.pop(key, None)
            for cached in [k for k in self._keys if k[0] == key]:
                del self._keys[cached]

    def clear(self) -> None:
        """Forget every key, so the next rsa_encrypt asks the broker again."""
        with self._lock:
            self._current.clear()
            self._keys.clear()


def _trim(entries: dict[_K, _V]) -> None:
    """Drop the oldest entries beyond the bound, so many key names cannot grow memory."""
    while len(entries) > _MAX_ENTRIES:
        del entries[next(iter(entries))]


def oaep_encrypt(public_key: rsa.RSAPublicKey, plaintext: bytes) -> bytes:
    """RSA-OAEP-encrypt locally, refusing oversize plaintext with a message naming the limit."""
    limit = public_key.key_size // 8 - _OAEP_OVERHEAD
    if len(plaintext) > limit:
        # The broker's own wording, so the message is the same wherever the check ran.
        raise InvalidParameterError(
            f"plaintext is {len(plaintext)} bytes; "
            f"RSA-{public_key.key_size}-OAEP-SHA256 takes at most {limit}",
            reason="INVALID_ARGUMENT",
        )
    try:
        return public_key.encrypt(plaintext, _oaep())
    except ValueError:
        raise EncryptionError("RSA-OAEP encryption failed") from None
