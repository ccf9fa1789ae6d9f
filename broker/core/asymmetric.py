"""RSA-OAEP encryption of small payloads: RSA-4096, OAEP with SHA-256 and MGF1-SHA-256.

Anyone holding the public key (SubjectPublicKeyInfo PEM) can encrypt; only the private key
decrypts. OAEP with a k-byte modulus and SHA-256 takes at most ``k - 2*32 - 2`` bytes of
plaintext: 446 for RSA-4096. The optional label is bound to the ciphertext (RFC 8017 §7.1).
Every decryption failure raises the same error, so a caller learns nothing about its cause.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "ALGORITHM",
    "MAX_LABEL_BYTES",
    "OaepDecryptionError",
    "OaepInputError",
    "decrypt",
    "encrypt",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "max_plaintext",
    "public_pem",
]

ALGORITHM: Final = "rsa-oaep-4096-sha256"
_BITS: Final = 4096
_HASH_SIZE: Final = 32
MAX_LABEL_BYTES: Final = 1024


class OaepInputError(ValueError):
    """The plaintext, ciphertext or label breaks a bound; the message names the bound."""


class OaepDecryptionError(Exception):
    """Decryption failed; one fixed message whatever the cause."""

    def __init__(self) -> None:
        """Carry one fixed message so a failure reveals nothing about its cause."""
        super().__init__("ciphertext could not be decrypted")


def max_plaintext(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> int:
    """The largest plaintext OAEP-SHA256 fits under this key (446 bytes for RSA-4096)."""
    return key.key_size // 8 - 2 * _HASH_SIZE - 2


def _oaep(label: bytes) -> padding.OAEP:
    if len(label) > MAX_LABEL_BYTES:
        raise OaepInputError(f"label is longer than {MAX_LABEL_BYTES} bytes")
    return padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label or None
    )


def generate_private_key() -> bytes:
    """A fresh RSA-4096 private key (e=65537) as unencrypted PKCS#8 DER."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_BITS)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(der: bytes, *, trusted: bool = False) -> rsa.RSAPrivateKey:
    """Load an RSA-4096 PKCS#8 DER key; `trusted` skips the slow consistency check.

    Pass `trusted=True` only for keys generated here and kept under authenticated encryption.
    """
    key = serialization.load_der_private_key(
        der, password=None, unsafe_skip_rsa_key_validation=trusted
    )
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != _BITS:
        raise OaepInputError(f"key material is not an {ALGORITHM} private key")
    return key


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from SubjectPublicKeyInfo PEM."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise OaepInputError("not an RSA public key")
    return key


def public_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """The public half as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def encrypt(key: rsa.RSAPublicKey, plaintext: bytes, label: bytes = b"") -> bytes:
    """OAEP-encrypt; an oversize plaintext fails with a message naming the limit."""
    limit = max_plaintext(key)
    if len(plaintext) > limit:
        raise OaepInputError(
            f"plaintext is {len(plaintext)} bytes; "
            f"RSA-{key.key_size}-OAEP-SHA256 takes at most {limit}"
        )
    return key.encrypt(plaintext, _oaep(label))


def decrypt(key: rsa.RSAPrivateKey, ciphertext: bytes, label: bytes = b"") -> bytes:
    """OAEP-decrypt; any failure (length, padding, label) raises OaepDecryptionError."""
    oaep = _oaep(label)
    if len(ciphertext) != key.key_size // 8:
        raise OaepDecryptionError
    try:
        return key.decrypt(ciphertext, oaep)
    except ValueError:
        raise OaepDecryptionError from None
