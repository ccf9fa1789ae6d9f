"""Checks and conversions shared by the backends that sign inside a remote KMS.

A KMS signs whatever bytes it is given (Vault signs a "digest" of the wrong length without
complaint), so the broker validates input against the algorithm before a request leaves the
process, with the same messages as local keys. Public keys become SubjectPublicKeyInfo PEM
whatever form the KMS returns them in (DER, PEM, raw Ed25519 bytes).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from broker.core import signatures
from broker.errors import InvalidRequestError, KmsError

__all__ = ["check_input", "digest", "pem_from_der", "pem_from_ed25519", "pem_from_pem"]

_HASHES = {32: hashes.SHA256, 48: hashes.SHA384}
_PUBLIC_TYPES = (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)
_UNREADABLE = "the KMS returned an unreadable public key"


def check_input(algorithm: str, message: bytes, *, prehashed: bool) -> None:
    """Refuse a digest the algorithm cannot sign (wrong length, or Ed25519) before any call."""
    if not prehashed:
        return
    size = signatures.digest_size(algorithm)
    if size is None:
        raise InvalidRequestError(f"{algorithm} signs the message itself; send data, not a digest")
    if len(message) != size:
        name = _HASHES[size].name
        raise InvalidRequestError(f"digest must be {size} bytes ({name}) for {algorithm}")


def digest(algorithm: str, message: bytes) -> bytes:
    """The algorithm's hash of a message, for KMS calls that take a digest instead."""
    size = signatures.digest_size(algorithm)
    if size is None:  # pragma: no cover - only hashing algorithms reach here
        raise InvalidRequestError(f"{algorithm} signs the message itself")
    hasher = hashes.Hash(_HASHES[size]())
    hasher.update(message)
    return hasher.finalize()


def pem_from_der(der: bytes) -> str:
    """SubjectPublicKeyInfo DER (AWS KMS GetPublicKey) as PEM; KmsError when it is not one."""
    try:
        key = serialization.load_der_public_key(der)
    except ValueError as exc:
        raise KmsError(_UNREADABLE) from exc
    if not isinstance(key, _PUBLIC_TYPES):
        raise KmsError("the KMS returned a public key of an unsupported type")
    return signatures.public_pem(key)


def pem_from_pem(pem: str) -> str:
    """A PEM public key from a KMS, re-encoded so every backend returns the same layout."""
    try:
        return signatures.public_pem(signatures.load_public_key(pem))
    except (ValueError, UnicodeEncodeError) as exc:
        raise KmsError(_UNREADABLE) from exc
    except TypeError as exc:
        raise KmsError("the KMS returned a public key of an unsupported type") from exc


def pem_from_ed25519(raw: bytes) -> str:
    """A raw 32-byte Ed25519 public key (Vault transit's form) as PEM."""
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KmsError(_UNREADABLE) from exc
    return signatures.public_pem(key)
