"""Signatures with the broker's signing algorithms, over a message or a precomputed digest.

| Algorithm name          | Key                | Hash    | Signature form                  |
|-------------------------|--------------------|---------|---------------------------------|
| ``ecdsa-p384-sha384``   | ECDSA P-384        | SHA-384 | DER ``Ecdsa-Sig-Value``         |
| ``ecdsa-p256-sha256``   | ECDSA P-256        | SHA-256 | DER ``Ecdsa-Sig-Value``         |
| ``ed25519``             | Ed25519            | (none)  | raw 64 bytes; messages only     |
| ``rsa-pss-3072-sha256`` | RSA 3072, e=65537  | SHA-256 | raw; MGF1-SHA-256, salt 32 bytes|
| ``rsa-pss-4096-sha256`` | RSA 4096, e=65537  | SHA-256 | raw; MGF1-SHA-256, salt 32 bytes|

The RSA-PSS salt length equals the digest length, as AWS KMS and most verifiers expect.
Private keys travel as unencrypted PKCS#8 DER (callers seal them); public keys as
SubjectPublicKeyInfo PEM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

__all__ = [
    "DEFAULT_ALGORITHM",
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE_ALGORITHMS",
    "InvalidSignatureError",
    "PrivateKey",
    "PublicKey",
    "SignatureInputError",
    "digest_size",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "public_pem",
    "sign",
    "verify",
]

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

DEFAULT_ALGORITHM: Final = "ecdsa-p384-sha384"
MAX_SIGNATURE_BYTES: Final = 1024  # RSA-4096 signatures are 512 bytes, DER P-384 at most 104


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: str  # "ecdsa" | "ed25519" | "rsa-pss"
    size: int  # curve or modulus bits (0 for Ed25519)
    hash: hashes.HashAlgorithm | None


SIGNATURE_ALGORITHMS: Final[dict[str, _Spec]] = {
    "ecdsa-p384-sha384": _Spec("ecdsa", 384, hashes.SHA384()),
    "ecdsa-p256-sha256": _Spec("ecdsa", 256, hashes.SHA256()),
    "ed25519": _Spec("ed25519", 0, None),
    "rsa-pss-3072-sha256": _Spec("rsa-pss", 3072, hashes.SHA256()),
    "rsa-pss-4096-sha256": _Spec("rsa-pss", 4096, hashes.SHA256()),
}
_CURVES: Final[dict[int, ec.EllipticCurve]] = {384: ec.SECP384R1(), 256: ec.SECP256R1()}
_PRIVATE_TYPES = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)
_PUBLIC_TYPES = (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)


class SignatureInputError(ValueError):
    """The message or digest does not fit the algorithm; the message names the rule."""


class InvalidSignatureError(Exception):
    """The signature does not verify; one fixed message whatever the cause."""

    def __init__(self) -> None:
        """Carry one fixed message so a failure reveals nothing about its cause."""
        super().__init__("signature verification failed")


def _spec(algorithm: str) -> _Spec:
    spec = SIGNATURE_ALGORITHMS.get(algorithm)
    if spec is None:
        known = ", ".join(SIGNATURE_ALGORITHMS)
        raise ValueError(f"unknown signature algorithm {algorithm!r}; known: {known}")
    return spec


def digest_size(algorithm: str) -> int | None:
    """Bytes of the digest a caller must send for prehashed signing; None when not allowed."""
    spec = _spec(algorithm)
    return None if spec.hash is None else spec.hash.digest_size


def generate_private_key(algorithm: str) -> bytes:
    """A fresh private key for the algorithm, as unencrypted PKCS#8 DER."""
    spec = _spec(algorithm)
    key: PrivateKey
    if spec.kind == "ecdsa":
        key = ec.generate_private_key(_CURVES[spec.size])
    elif spec.kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=spec.size)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(algorithm: str, der: bytes, *, trusted: bool = False) -> PrivateKey:
    """Load PKCS#8 DER and check it is a key of the algorithm.

    `trusted=True` skips pyca's RSA consistency check (about 0.4 s for RSA-4096); pass it only
    for keys this module generated and the caller kept under authenticated encryption.
    """
    spec = _spec(algorithm)
    key = serialization.load_der_private_key(
        der, password=None, unsafe_skip_rsa_key_validation=trusted
    )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ok = spec.kind == "ecdsa" and key.curve.key_size == spec.size
    elif isinstance(key, rsa.RSAPrivateKey):
        ok = spec.kind == "rsa-pss" and key.key_size == spec.size
    else:
        ok = spec.kind == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey)
    if not ok or not isinstance(key, _PRIVATE_TYPES):
        raise ValueError(f"key material is not a {algorithm} private key")
    return key


def load_public_key(pem: str | bytes) -> PublicKey:
    """Load a SubjectPublicKeyInfo PEM of any supported signing key type."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, _PUBLIC_TYPES):
        raise TypeError("not an ECDSA, Ed25519 or RSA public key")
    return key


def public_pem(key: PrivateKey | PublicKey) -> str:
    """The public half as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if isinstance(key, _PRIVATE_TYPES) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _check_input(algorithm: str, spec: _Spec, message: bytes, *, prehashed: bool) -> None:
    if not prehashed:
        return
    if spec.hash is None:
        raise SignatureInputError(f"{algorithm} signs the message itself; send data, not a digest")
    if len(message) != spec.hash.digest_size:
        raise SignatureInputError(
            f"digest must be {spec.hash.digest_size} bytes ({spec.hash.name}) for {algorithm}"
        )


def _hash_arg(spec: _Spec, *, prehashed: bool) -> hashes.HashAlgorithm | utils.Prehashed:
    if spec.hash is None:  # pragma: no cover - Ed25519 keys never reach here
        raise SignatureInputError("this algorithm takes no hash")
    return utils.Prehashed(spec.hash) if prehashed else spec.hash


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign(key: PrivateKey, algorithm: str, message: bytes, *, prehashed: bool = False) -> bytes:
    """Sign a message, or its digest when `prehashed` (not for Ed25519)."""
    spec = _spec(algorithm)
    _check_input(algorithm, spec, message, prehashed=prehashed)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(_hash_arg(spec, prehashed=prehashed)))
    return key.sign(message, _pss(), _hash_arg(spec, prehashed=prehashed))


def verify(
    key: PublicKey, algorithm: str, signature: bytes, message: bytes, *, prehashed: bool = False
) -> None:
    """Return silently for a valid signature; raise InvalidSignatureError otherwise."""
    spec = _spec(algorithm)
    _check_input(algorithm, spec, message, prehashed=prehashed)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(_hash_arg(spec, prehashed=prehashed)))
        else:
            key.verify(signature, message, _pss(), _hash_arg(spec, prehashed=prehashed))
    except InvalidSignature:
        raise InvalidSignatureError from None
