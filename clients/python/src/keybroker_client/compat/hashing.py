"""The seed's hashing: Argon2id passwords in the broker, SHA-256 and caller-key HMACs locally.

Password hashing runs in the broker, which bounds its memory use, with the seed's
parameters (Argon2id, t=3, m=64 MiB, p=4, 32-byte hash) and the standard PHC string, so
hashes stored by the seed keep verifying. SHA-256 and HMAC-SHA256 under a key the caller
holds run locally. Digests and MACs are lowercase hex; every comparison is constant-time.
A mismatch raises ``HashMismatchError``: a ``HashingError`` as the seed documents, and a
``VerificationError`` as ``keybroker_client`` reports it.

``hmac_sign_with_key_id`` and ``hmac_verify_with_key_id`` are keybroker additions that use
an HMAC key the broker holds.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from typing import Final, Literal

from keybroker_client._convert import check_bytes

from ._calls import broker_call, client
from ._util import invalid, text_or_bytes
from .exceptions import HashingError, HashMismatchError

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
    with broker_call(HashingError, mismatch=HashMismatchError):
        return client().hash_password(password)


def verify_password(password: str | bytes, hash_string: str) -> Literal[True]:
    """Return True when the password matches the stored hash; a mismatch raises HashingError."""
    with broker_call(HashingError, mismatch=HashMismatchError):
        return client().verify_password(password, hash_string)


def hash_data(data: bytes | str) -> str:
    """Return the SHA-256 of data as lowercase hex, computed locally (not for passwords)."""
    return hashlib.sha256(text_or_bytes("data", data)).hexdigest()


def _mismatch(message: str) -> HashMismatchError:
    """The one error for any mismatch, with the reason word the broker uses."""
    return HashMismatchError(message, reason="VERIFICATION_FAILED")


def _expected(name: str, value: object, message: str) -> bytes:
    """Read an expected digest or MAC: hex text or raw bytes; malformed hex never matches."""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise _mismatch(message) from None
    return check_bytes(name, value)


def _check_equal(actual: bytes, expected: bytes, message: str) -> Literal[True]:
    """Compare in constant time, so the time taken reveals nothing about the right value."""
    if not _hmac.compare_digest(actual, expected):
        raise _mismatch(message)
    return True


def verify_data_integrity(data: bytes | str, expected_hash: str | bytes) -> Literal[True]:
    """Return True when SHA-256(data) equals expected_hash; otherwise raise HashingError."""
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


def hmac_verify(data: bytes | str, key: bytes, expected_hmac: str | bytes) -> Literal[True]:
    """Return True when expected_hmac (hex or raw) is the data's HMAC; else raise HashingError."""
    actual = _mac(data, key)
    expected = _expected("expected_hmac", expected_hmac, _MAC_FAILED)
    return _check_equal(actual, expected, _MAC_FAILED)


def hmac_sign_with_key_id(data: bytes | str, key_id: str) -> str:
    """Return HMAC-SHA256 under a broker-held HMAC key, as lowercase hex."""
    with broker_call(HashingError, mismatch=HashMismatchError):
        return client().hmac(text_or_bytes("data", data), key=key_id).hex()


def hmac_verify_with_key_id(
    data: bytes | str, signature: str | bytes, key_id: str
) -> Literal[True]:
    """Check a MAC (hex or raw) in the broker, in constant time; a mismatch raises."""
    mac = _expected("signature", signature, _MAC_FAILED)
    with broker_call(HashingError, mismatch=HashMismatchError):
        return client().hmac_verify(text_or_bytes("data", data), mac, key=key_id)
