"""The seed's ``asymmetric`` module on keys the broker holds: RSA-OAEP and signatures.

Private keys never leave the broker, so the seed's ``generate_keypair`` is not offered:
configure a key in the daemon (``[keys.NAME]`` with ``purpose = "signing"`` or
``"asymmetric_decrypt"``) and pass its name as ``key_id``. ``rsa_encrypt`` runs locally
with the key's cached public half; everything else calls the broker.
"""

from __future__ import annotations

from typing import Literal

from keybroker_client import _facade

from ._util import text_or_bytes

__all__ = ["get_public_key", "rsa_decrypt", "rsa_encrypt", "sign", "verify"]

_NO_KEYPAIRS = (
    "keybroker_client.compat.asymmetric has no generate_keypair: keys are created and held "
    'by the broker; configure [keys.NAME] with purpose = "signing" or '
    '"asymmetric_decrypt" and pass NAME as key_id'
)


def __getattr__(name: str) -> object:
    """Explain where the seed's key generation went instead of a bare AttributeError."""
    if name == "generate_keypair":
        raise AttributeError(_NO_KEYPAIRS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def rsa_encrypt(plaintext: bytes | str, key_id: str) -> bytes:
    """RSA-OAEP-encrypt (SHA-256) for a broker decryption key, offline once its key is cached."""
    return _facade.shared_client().rsa_encrypt(text_or_bytes("plaintext", plaintext), key=key_id)


def rsa_decrypt(ciphertext: bytes, key_id: str) -> bytes:
    """Decrypt RSA-OAEP ciphertext in the broker, which holds the private key."""
    return _facade.shared_client().rsa_decrypt(ciphertext, key=key_id)


def sign(data: bytes | str, key_id: str) -> bytes:
    """Sign with a broker signing key (ECDSA P-384/SHA-384 signatures are DER)."""
    return _facade.shared_client().sign(text_or_bytes("data", data), key=key_id)


def verify(data: bytes | str, signature: bytes, key_id: str) -> Literal[True]:
    """Return True for a valid signature; an invalid one raises VerificationError."""
    return _facade.shared_client().verify(text_or_bytes("data", data), signature, key=key_id)


def get_public_key(key_id: str) -> bytes:
    """Return the key's public half as PEM (SubjectPublicKeyInfo), for verifying elsewhere."""
    return _facade.shared_client().public_key(key_id)
