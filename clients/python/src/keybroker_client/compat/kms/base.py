"""The seed's ``KMSBackend`` interface: wrap, unwrap and generate data-encryption keys.

Subclass it for a KMS of your own, as with the seed: ``EnvelopeEncryptor`` then runs the
seed's envelope flow in this process with your backend (seed-format envelopes). The
backends this package ships (``LocalKMSBackend``, ``AWSKMSBackend``, ``GCPKMSBackend``,
``VaultKMSBackend``) are different: they hold no credentials and hand every operation to
the broker key that maps to the backend key (see ``keybroker_client.compat.kms.broker``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from keybroker_client.compat.symmetric import generate_key

__all__ = ["KMSBackend"]


class KMSBackend(ABC):
    """Wraps and unwraps DEKs under a key the KMS holds, named by ``key_id``."""

    @abstractmethod
    def encrypt_key(self, key_material: bytes, key_id: str) -> str:
        """Wrap a DEK under ``key_id``; returns the wrapped DEK as base64 text."""

    @abstractmethod
    def decrypt_key(self, encrypted_key: str, key_id: str) -> bytes:
        """Unwrap what ``encrypt_key`` returned; returns the plaintext DEK."""

    def generate_data_key(self, key_id: str) -> tuple[bytes, str]:
        """Make a fresh 256-bit DEK and wrap it: (plaintext_key, encrypted_key_base64)."""
        plaintext_key = generate_key()
        return plaintext_key, self.encrypt_key(key_material=plaintext_key, key_id=key_id)
