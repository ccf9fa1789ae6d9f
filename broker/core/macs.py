"""HMAC-SHA256, constant-time MAC checks and blind indexes.

A blind index is a deterministic, searchable token for a field value: HMAC-SHA256 under a
key derived from the HMAC key for one (field, tenant) pair, truncated to 16..32 bytes::

    index_key = HKDF-SHA256(ikm=hmac key, salt=none,
                            info="keybroker/v1/blind-index" || canonical({field, tenant}), L=32)
    index     = HMAC-SHA256(index_key, value)[:length]

`canonical` is the encryption-context encoding (docs/wire-format.md) of the mapping
``{"field": field, "tenant": tenant}``, so distinct pairs never share a derived key and the
same value indexes differently per field and per tenant.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.core.context import ContextError, canonical_context

__all__ = [
    "BLIND_INDEX_INFO",
    "BLIND_INDEX_LENGTHS",
    "MAC_SIZE",
    "MacInputError",
    "MacMismatchError",
    "blind_index_label",
    "derived_mac",
    "hmac_sha256",
    "verify_hmac_sha256",
]

MAC_SIZE: Final = 32
BLIND_INDEX_INFO: Final = b"keybroker/v1/blind-index"
BLIND_INDEX_LENGTHS: Final = (16, 32)


class MacInputError(ValueError):
    """An input breaks a bound; the message names the bound, never the value."""


class MacMismatchError(Exception):
    """The MAC does not match; one fixed message whatever the cause."""

    def __init__(self) -> None:
        """Carry one fixed message so a failure reveals nothing about its cause."""
        super().__init__("MAC verification failed")


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of data (RFC 2104)."""
    return hmac.new(key, data, hashlib.sha256).digest()


def verify_hmac_sha256(key: bytes, data: bytes, mac: bytes) -> None:
    """Return silently when the MAC matches, compared in constant time; raise otherwise."""
    if not hmac.compare_digest(hmac_sha256(key, data), mac):
        raise MacMismatchError


def blind_index_label(field: str, tenant: str) -> bytes:
    """The HKDF info that scopes a blind-index key to one (field, tenant) pair."""
    if not field:
        raise MacInputError("field must not be empty")
    try:
        return BLIND_INDEX_INFO + canonical_context({"field": field, "tenant": tenant})
    except ContextError:
        raise MacInputError(
            "field and tenant must be UTF-8 text of at most 2048 bytes each"
        ) from None


def derived_mac(key: bytes, label: bytes, data: bytes, length: int = MAC_SIZE) -> bytes:
    """HMAC-SHA256 of data under HKDF-SHA256(key, info=label), truncated to `length` bytes."""
    if not BLIND_INDEX_LENGTHS[0] <= length <= MAC_SIZE:
        lo, hi = BLIND_INDEX_LENGTHS
        raise MacInputError(f"length must be {lo}..{hi} bytes")
    sub_key = HKDF(algorithm=hashes.SHA256(), length=MAC_SIZE, salt=None, info=label).derive(key)
    return hmac_sha256(sub_key, data)[:length]
