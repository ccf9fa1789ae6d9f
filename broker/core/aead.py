"""Keys derived from one data-encryption key (DEK), and the AES-256-GCM operations that use them.

From a 32-byte DEK (docs/wire-format.md) HKDF-SHA256 with an empty salt derives:

* the content key, ``info="keybroker/v1/aes-256-gcm"``, which keys AES-256-GCM for format 1;
* the key commitment, ``info="keybroker/v1/commitment"``, stored in every header;
* per stream, the segment key, ``salt=stream salt, info="keybroker/v1/stream-aes-256-gcm"``.

The DEK itself never keys AES directly.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "COMMITMENT_SIZE",
    "DEK_SIZE",
    "NONCE_SIZE",
    "STREAM_SALT_SIZE",
    "TAG_SIZE",
    "AeadError",
    "DataKey",
    "KeyWipedError",
]

DEK_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
COMMITMENT_SIZE = 32
STREAM_SALT_SIZE = 16

_CONTENT_INFO = b"keybroker/v1/aes-256-gcm"
_COMMITMENT_INFO = b"keybroker/v1/commitment"
_SEGMENT_INFO = b"keybroker/v1/stream-aes-256-gcm"


class AeadError(Exception):
    """Opening failed (wrong key, commitment, context, or altered bytes); never says which."""

    def __init__(self) -> None:
        """Carry one fixed message so a failure reveals nothing about its cause."""
        super().__init__("authentication failed")


class KeyWipedError(RuntimeError):
    """A DataKey was used after ``wipe()``: a lifecycle bug, not a bad ciphertext."""

    def __init__(self) -> None:
        """Carry one fixed message; the key material is gone."""
        super().__init__("data key has been wiped")


def _hkdf(key_material: bytes | bytearray, salt: bytes, info: bytes) -> bytes:
    """Derive 32 bytes with HKDF-SHA256 (an empty salt is the RFC 5869 default)."""
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info)
    return kdf.derive(key_material)


class DataKey:
    """One DEK and what derives from it, held so that it can be overwritten when retired.

    The DEK and content key live in ``bytearray`` objects that ``wipe()`` zeroes. This is best
    effort: the AES-GCM object and transient ``bytes`` inside the HKDF keep their own copies,
    which Python cannot overwrite; they are released with the last reference.
    """

    __slots__ = ("_aead", "_content_key", "_dek", "commitment")

    def __init__(self, dek: bytes | bytearray) -> None:
        """Copy ``dek`` and derive the content key and commitment from it."""
        if len(dek) != DEK_SIZE:
            raise ValueError(f"DEK must be {DEK_SIZE} bytes")
        self._dek = bytearray(dek)
        self._content_key = bytearray(_hkdf(self._dek, b"", _CONTENT_INFO))
        self.commitment: bytes = _hkdf(self._dek, b"", _COMMITMENT_INFO)
        self._aead: AESGCM | None = AESGCM(self._content_key)

    @classmethod
    def from_dek(cls, dek: bytes | bytearray) -> DataKey:
        """Build the keys for a DEK that a KMS generated or unwrapped."""
        return cls(dek)

    def __repr__(self) -> str:
        """Show the state only, never key material."""
        return f"<DataKey {'wiped' if self._aead is None else 'live'}>"

    def _cipher(self) -> AESGCM:
        """Return the content cipher, refusing a wiped key."""
        aead = self._aead
        if aead is None:
            raise KeyWipedError
        return aead

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate with the content key; returns ciphertext with its tag."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        return self._cipher().encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Authenticate and decrypt with the content key; any failure is an AeadError."""
        aead = self._cipher()
        if len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
            raise AeadError
        try:
            return aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise AeadError from None

    def matches(self, commitment: bytes) -> bool:
        """Tell in constant time whether a header's commitment was made from this DEK."""
        return hmac.compare_digest(self.commitment, commitment)

    def content_key(self) -> bytes:
        """Return a copy of the content key, the only key a data-key lease may hand out."""
        self._cipher()
        return bytes(self._content_key)

    def segment_cipher(self, salt: bytes) -> AESGCM:
        """Return the AES-GCM cipher keyed for one stream, identified by its random salt."""
        self._cipher()
        if len(salt) != STREAM_SALT_SIZE:
            raise ValueError(f"stream salt must be {STREAM_SALT_SIZE} bytes")
        segment_key = bytearray(_hkdf(self._dek, salt, _SEGMENT_INFO))
        try:
            return AESGCM(segment_key)
        finally:
            segment_key[:] = bytes(len(segment_key))

    def wipe(self) -> None:
        """Overwrite the DEK and content key and drop the cipher; later use raises KeyWipedError.

        Best effort: the dropped AESGCM object holds its own copy of the content key until it is
        garbage-collected, and ciphers already returned by ``segment_cipher`` keep working.
        """
        self._aead = None
        self._dek[:] = bytes(len(self._dek))
        self._content_key[:] = bytes(len(self._content_key))
