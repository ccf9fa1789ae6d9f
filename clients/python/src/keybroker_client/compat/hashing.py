"""The seed's ``hashing`` module: passwords in the broker, SHA-256 and caller-held HMACs locally.

Password hashing (Argon2id) runs in the broker, which bounds its memory use. SHA-256 and
HMAC-SHA256 under a key the caller holds run locally; ``hmac_sign_with_key_id`` and
``hmac_verify_with_key_id`` use an HMAC key the broker holds. Digests and MACs are
lowercase hex text; every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from typing import Final, Literal

from keybroker_client import _facade
from keybroker_client._convert import check_bytes
from keybroker_client._errors import VerificationError

from ._util import invalid, text_or_bytes

__all__ = [
    "hash_data",
    "hash_password",
    "hmac_sign",
    "hmac_sign_with_key_id",
    "hmac_verify",
    "hmac_verify_with_key_id",
    "verify_data_integrity",
    "verify_password",
]

_INTEGRITY_FAILED: Final = "data integrity check failed"
_MAC_FAILED: Final = "HMAC verification failed"


def hash_password(password: str | bytes) -> str:
    """Hash a password with Argon2id in the broker; store the returned PHC string."""
    return _facade.shared_client().hash_password(password)


def verify_password(password: str | bytes, hash_string: str) -> Literal[True]:
    """Return True when the password matches; a mismatch raises VerificationError."""
    return _facade.shared_client().verify_password(password, hash_string)


def hash_data(data: bytes | str) -> str:
    """Return the SHA-256 of data as lowercase hex, computed locally."""
    return hashlib.sha256(text_or_bytes("data", data)).hexdigest()


def _expected(name: str, value: object, message: str) -> bytes:
    """Read an expected digest or MAC: hex text or raw bytes; malformed hex never matches."""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise VerificationError(message, reason="VERIFICATION_FAILED") from None
    return check_bytes(name, value)


def _check_equal(actual: bytes, expected: bytes, message: str) -> Literal[True]:
    """Compare in constant time, so the time taken reveals nothing about the right value."""
    if not _hmac.compare_digest(actual, expected):
        raise VerificationError(message, reason="VERIFICATION_FAILED")
    return True


def verify_data_integrity(data: bytes | str, expected_hash: str | bytes) -> Literal[True]:
    """Return True when SHA-256(data) equals expected_hash; otherwise raise VerificationError."""
    actual = hashlib.sha256(text_or_bytes("data", data)).digest()
    expected = _expected("expected_hash", expected_hash, _INTEGRITY_FAILED)
    return _check_equal(actual, expected, _INTEGRITY_FAILED)


def _mac(data: object, key: object) -> bytes:
    """HMAC-SHA256 under a caller-held key; an empty key would authenticate nothing."""
    secret = check_bytes("key", key)
    if not secret:
        raise invalid("key must not be empty")
    return _hmac.digest(secret, text_or_bytes("data", data), "sha256")


def hmac_sign(data: bytes | str, key: bytes) -> str:
    """Return HMAC-SHA256 of data under a caller-held key, as lowercase hex, computed locally."""
    return _mac(data, key).hex()


def hmac_verify(data: bytes | str, signature: str | bytes, key: bytes) -> Literal[True]:
    """Return True when signature (hex or raw) is the data's HMAC; else VerificationError."""
    actual = _mac(data, key)
    expected = _expected("signature", signature, _MAC_FAILED)
    return _check_equal(actual, expected, _MAC_FAILED)


def hmac_sign_with_key_id(data: bytes | str, key_id: str) -> str:
    """Return HMAC-SHA256 under a broker-held HMAC key, as lowercase hex."""
    return _facade.shared_client().hmac(text_or_bytes("data", data), key=key_id).hex()


def hmac_verify_with_key_id(
    data: bytes | str, signature: str | bytes, key_id: str
) -> Literal[True]:
    """Check a MAC (hex or raw) in the broker, in constant time; a mismatch raises."""
    mac = _expected("signature", signature, _MAC_FAILED)
    return _facade.shared_client().hmac_verify(text_or_bytes("data", data), mac, key=key_id)
