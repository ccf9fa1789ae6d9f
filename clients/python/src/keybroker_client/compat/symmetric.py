"""The seed's ``symmetric`` module: AES-256-GCM under a key the caller holds, run locally.

``generate_key``, ``encrypt`` and ``decrypt`` use pyca/cryptography with the seed's text
format, so ciphertexts written before the migration keep decrypting::

    base64( nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes) )     standard alphabet, padded

``envelope_encrypt`` and ``envelope_decrypt`` are keybroker additions that seal under a key
the broker holds (its own envelope format, as base64 text).
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keybroker_client import _facade
from keybroker_client._convert import check_bytes

from ._calls import broker_call
from ._util import b64decode_text, invalid, text_or_bytes
from .exceptions import DecryptionError, EncryptionError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "decrypt",
    "encrypt",
    "envelope_decrypt",
    "envelope_encrypt",
    "generate_key",
]

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_DECRYPTION_FAILED: Final = "ciphertext could not be decrypted"


def generate_key() -> bytes:
    """Return a fresh random 256-bit AES key; the caller stores and protects it."""
    return AESGCM.generate_key(bit_length=KEY_SIZE * 8)


def _aead(key: object) -> AESGCM:
    """Accept only a 32-byte key: the seed's format is AES-256 and nothing weaker."""
    raw = check_bytes("key", key)
    if len(raw) != KEY_SIZE:
        raise invalid(f"key must be {KEY_SIZE} bytes (AES-256), got {len(raw)}")
    return AESGCM(raw)


def _associated(associated_data: object) -> bytes | None:
    """None authenticates nothing extra; text is taken as UTF-8 as the seed did."""
    return None if associated_data is None else text_or_bytes("associated_data", associated_data)


def encrypt(plaintext: bytes | str, key: bytes, associated_data: bytes | str | None = None) -> str:
    """Encrypt locally with AES-256-GCM under a caller-held key; returns the seed's base64 text."""
    aead = _aead(key)
    data = text_or_bytes("plaintext", plaintext)
    nonce = os.urandom(NONCE_SIZE)
    try:
        sealed = aead.encrypt(nonce, data, _associated(associated_data))
    except OverflowError as exc:
        raise EncryptionError("plaintext too large for AES-GCM", exc) from exc
    return base64.b64encode(nonce + sealed).decode("ascii")


def _failed(cause: BaseException | None = None) -> DecryptionError:
    """One fixed message for every failure, so nothing about the cause can be probed."""
    return DecryptionError(_DECRYPTION_FAILED, cause, reason="DECRYPTION_FAILED")


def decrypt(
    encrypted_data: str | bytes, key: bytes, associated_data: bytes | str | None = None
) -> bytes:
    """Decrypt what ``encrypt`` returned; a wrong key, AAD or any tampering raises."""
    aead = _aead(key)
    raw = b64decode_text("encrypted_data", encrypted_data)
    if raw is None or len(raw) < NONCE_SIZE + TAG_SIZE:
        raise _failed()
    try:
        return aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], _associated(associated_data))
    except InvalidTag as exc:
        raise _failed(exc) from exc


def envelope_encrypt(
    plaintext: bytes | str,
    *,
    key_id: str = "default",
    context: Mapping[str, str] | None = None,
) -> str:
    """Seal in the broker under its logical key ``key_id``; returns the envelope as base64."""
    with broker_call(EncryptionError):
        return _facade.encrypt(plaintext, key=key_id, context=context)


def envelope_decrypt(
    encrypted_data: str | bytes,
    *,
    context: Mapping[str, str] | None = None,
) -> bytes:
    """Open a broker envelope (base64 text or binary); the envelope names its key."""
    with broker_call(DecryptionError):
        return _facade.decrypt(encrypted_data, context=context)
