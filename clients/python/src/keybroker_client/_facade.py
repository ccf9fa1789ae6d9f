"""Seed-style module functions: ``encrypt(plaintext=...)`` → base64 text, ``decrypt(...)``.

They share one lazily created ``Client`` (socket resolved on first use), so code written
against the seed API moves to the broker by changing only the import.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import threading
from typing import TYPE_CHECKING

from ._client import Client
from ._errors import DecryptionError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["decrypt", "encrypt", "shared_client"]

# Binary envelopes start with their format byte; base64 text never contains these bytes.
_FORMAT_BYTES = frozenset({0x01, 0x02})


class _SharedClient:
    """The facade's one Client, created on first use under a lock."""

    def __init__(self) -> None:
        """Start with no client, so importing the package opens nothing."""
        self._lock = threading.Lock()
        self._client: Client | None = None

    def get(self) -> Client:
        """Return the shared client, creating it once even under concurrent first calls."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = Client()
                client = self._client
        return client

    def reset(self) -> None:
        """Close the shared client; the next call resolves the socket again."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


_shared = _SharedClient()
atexit.register(_shared.reset)


def shared_client() -> Client:
    """The one lazily created Client behind the module functions and the compat modules."""
    return _shared.get()


def encrypt(
    plaintext: bytes | str,
    *,
    key: str = "default",
    context: Mapping[str, str] | None = None,
) -> str:
    """Encrypt for a text column: returns the envelope as standard base64 (str is UTF-8 encoded)."""
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    envelope = _shared.get().encrypt(data, key=key, context=context)
    return base64.b64encode(envelope).decode("ascii")


def _envelope_from(encrypted_data: str | bytes) -> bytes:
    """Accept the base64 text form (as str or ASCII bytes) or a binary envelope."""
    if isinstance(encrypted_data, (bytes, bytearray, memoryview)):
        raw = bytes(encrypted_data)
        if raw[:1] and raw[0] in _FORMAT_BYTES:
            return raw
    elif isinstance(encrypted_data, str):
        raw = encrypted_data.encode("ascii", errors="replace")
    else:
        raise TypeError(f"encrypted_data must be str or bytes, not {type(encrypted_data).__name__}")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise DecryptionError(
            "encrypted_data is not the base64 text form of an envelope", reason="DECRYPTION_FAILED"
        ) from None


def decrypt(
    encrypted_data: str | bytes,
    *,
    context: Mapping[str, str] | None = None,
) -> bytes:
    """Decrypt what ``encrypt`` returned (base64 text) or a binary envelope."""
    return _shared.get().decrypt(_envelope_from(encrypted_data), context=context)
