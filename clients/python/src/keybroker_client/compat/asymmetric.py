"""The seed's asymmetric operations: RSA-4096-OAEP and ECDSA P-384 on PEM keys the caller holds.

These run locally on pyca/cryptography with the seed's formats: key pairs as PEM (PKCS#8
private keys without encryption, SubjectPublicKeyInfo public keys), ciphertexts and
signatures as standard base64 text, RSA-OAEP with SHA-256 and MGF1-SHA-256, ECDSA with
SHA-384 and DER signatures.

The ``*_with_key_id`` functions and ``get_public_key`` are keybroker additions for keys the
broker holds and never hands out: configure ``[keys.NAME]`` with ``purpose = "signing"`` or
``"asymmetric_decrypt"`` and pass NAME.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Final, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ._calls import broker_call, client
from ._util import b64decode_text, invalid, text_or_bytes
from .exceptions import (
    DecryptionError,
    EncryptionError,
    KeyGenerationError,
    SigningError,
    VerificationError,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

__all__ = [
    "generate_ecdsa_key_pair",
    "generate_rsa_key_pair",
    "get_public_key",
    "rsa_decrypt",
    "rsa_decrypt_with_key_id",
    "rsa_encrypt",
    "rsa_encrypt_with_key_id",
    "sign",
    "sign_with_key_id",
    "verify",
    "verify_with_key_id",
]

RSA_KEY_SIZE: Final = 4096
_RSA_EXPONENT: Final = 65537
_INVALID_SIGNATURE: Final = "signature is invalid"
_DECRYPTION_FAILED: Final = "ciphertext could not be decrypted"


def _oaep() -> padding.OAEP:
    """The seed's padding: OAEP with SHA-256 and MGF1-SHA-256, no label."""
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _pem_pair(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    """(PKCS#8 PEM without encryption, SubjectPublicKeyInfo PEM), the seed's serialization."""
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def generate_rsa_key_pair() -> tuple[bytes, bytes]:
    """Generate an RSA-4096 key pair for encryption; returns (private_pem, public_pem)."""
    try:
        key = rsa.generate_private_key(public_exponent=_RSA_EXPONENT, key_size=RSA_KEY_SIZE)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyGenerationError("RSA key pair generation failed", exc) from exc
    return _pem_pair(key)


def generate_ecdsa_key_pair() -> tuple[bytes, bytes]:
    """Generate an ECDSA P-384 key pair for signing; returns (private_pem, public_pem)."""
    try:
        key = ec.generate_private_key(ec.SECP384R1())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyGenerationError("ECDSA key pair generation failed", exc) from exc
    return _pem_pair(key)


def _public_key(name: str, pem: object) -> PublicKeyTypes:
    """Load a SubjectPublicKeyInfo PEM; anything else is a parameter error naming the field."""
    try:
        return serialization.load_pem_public_key(text_or_bytes(name, pem))
    except (ValueError, UnsupportedAlgorithm):
        raise invalid(f"{name} is not a PEM public key") from None


def _private_key(name: str, pem: object) -> PrivateKeyTypes:
    """Load an unencrypted PKCS#8 (or traditional) PEM private key."""
    try:
        return serialization.load_pem_private_key(text_or_bytes(name, pem), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise invalid(f"{name} is not an unencrypted PEM private key") from None


def rsa_encrypt(plaintext: bytes | str, public_key_pem: bytes) -> str:
    """RSA-OAEP-encrypt under an RSA public key; returns base64 (at most 446 bytes fit)."""
    key = _public_key("public_key_pem", public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise invalid("public_key_pem is not an RSA public key")
    try:
        ciphertext = key.encrypt(text_or_bytes("plaintext", plaintext), _oaep())
    except ValueError as exc:
        raise EncryptionError("plaintext too large for RSA-OAEP with this key", exc) from exc
    return base64.b64encode(ciphertext).decode("ascii")


def rsa_decrypt(encrypted_data: str | bytes, private_key_pem: bytes) -> bytes:
    """Decrypt what ``rsa_encrypt`` returned; a wrong key or tampering raises DecryptionError."""
    key = _private_key("private_key_pem", private_key_pem)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise invalid("private_key_pem is not an RSA private key")
    raw = b64decode_text("encrypted_data", encrypted_data)
    if raw is None:
        raise DecryptionError(_DECRYPTION_FAILED, reason="DECRYPTION_FAILED")
    try:
        return key.decrypt(raw, _oaep())
    except ValueError as exc:
        raise DecryptionError(_DECRYPTION_FAILED, exc, reason="DECRYPTION_FAILED") from exc


def sign(data: bytes | str, private_key_pem: bytes) -> str:
    """Sign with an ECDSA private key (SHA-384); returns the DER signature as base64."""
    key = _private_key("private_key_pem", private_key_pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise invalid("private_key_pem is not an ECDSA private key")
    try:
        signature = key.sign(text_or_bytes("data", data), ec.ECDSA(hashes.SHA384()))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningError("ECDSA signing failed", exc) from exc
    return base64.b64encode(signature).decode("ascii")


def verify(data: bytes | str, signature: str | bytes, public_key_pem: bytes) -> Literal[True]:
    """Return True for a valid signature; an invalid one raises VerificationError."""
    key = _public_key("public_key_pem", public_key_pem)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise invalid("public_key_pem is not an ECDSA public key")
    raw = b64decode_text("signature", signature)
    if raw is None:
        raise VerificationError(_INVALID_SIGNATURE, reason="VERIFICATION_FAILED")
    try:
        key.verify(raw, text_or_bytes("data", data), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise VerificationError(_INVALID_SIGNATURE, exc, reason="VERIFICATION_FAILED") from exc
    return True


def rsa_encrypt_with_key_id(plaintext: bytes | str, key_id: str) -> bytes:
    """RSA-OAEP-encrypt for a broker decryption key (offline once its public key is cached)."""
    with broker_call(EncryptionError):
        return client().rsa_encrypt(text_or_bytes("plaintext", plaintext), key=key_id)


def rsa_decrypt_with_key_id(ciphertext: bytes, key_id: str) -> bytes:
    """Decrypt RSA-OAEP ciphertext in the broker, which holds the private key."""
    with broker_call(DecryptionError):
        return client().rsa_decrypt(ciphertext, key=key_id)


def sign_with_key_id(data: bytes | str, key_id: str) -> bytes:
    """Sign with a broker signing key (ECDSA P-384/SHA-384 signatures are DER)."""
    with broker_call(SigningError):
        return client().sign(text_or_bytes("data", data), key=key_id)


def verify_with_key_id(data: bytes | str, signature: bytes, key_id: str) -> Literal[True]:
    """Return True for a valid signature by a broker key; an invalid one raises."""
    with broker_call(SigningError):
        return client().verify(text_or_bytes("data", data), signature, key=key_id)


def get_public_key(key_id: str) -> bytes:
    """Return a broker key's public half as PEM (SubjectPublicKeyInfo), to verify elsewhere."""
    with broker_call(SigningError):
        return client().public_key(key_id)
