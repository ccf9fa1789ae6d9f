"""The envelope of ``ecl_crypto_utility``, read so that the data it sealed moves to the broker.

The seed stored standard base64 of a UTF-8 JSON object with exactly these six members::

    {"version": 1, "encrypted_dek": "<base64>", "key_id": "<KMS key id>",
     "encrypted_data": "<base64>", "algorithm": "AES-256-GCM", "timestamp": "<ISO 8601>"}

``encrypted_dek`` is base64 of what the seed's KMS returned when it wrapped the 32-byte DEK
with no encryption context: an AWS KMS ``CiphertextBlob``, a Cloud KMS ``ciphertext``, or
the UTF-8 text of a Vault transit ``vault:vN:…`` ciphertext. ``encrypted_data`` is base64 of
``nonce (12) ‖ AES-256-GCM(DEK, plaintext, no associated data) ‖ tag (16)``.

Every length is checked before use: the whole text (``max_bytes``), ``key_id`` (at most
2048 characters), ``timestamp`` (at most 64), the wrapped DEK (1 to 6144 bytes, the largest
ciphertext AWS KMS returns) and the payload (at least nonce and tag). Members must have
exactly the JSON types above, with no duplicate and no other member. Any deviation is a
``SeedEnvelopeError`` naming what is wrong, never a value from the envelope.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.core.aead import DEK_SIZE, NONCE_SIZE, TAG_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_KEY_ID_CHARS",
    "MAX_TIMESTAMP_CHARS",
    "MAX_WRAPPED_DEK_BYTES",
    "SEED_ALGORITHM",
    "SEED_VERSION",
    "SeedEnvelope",
    "SeedEnvelopeError",
    "open_seed_payload",
    "parse_seed_envelope",
]

SEED_VERSION: Final = 1
SEED_ALGORITHM: Final = "AES-256-GCM"
MAX_KEY_ID_CHARS: Final = 2048
MAX_TIMESTAMP_CHARS: Final = 64
MAX_WRAPPED_DEK_BYTES: Final = 6144
_MEMBERS: Final = frozenset(
    {"version", "encrypted_dek", "key_id", "encrypted_data", "algorithm", "timestamp"}
)


class SeedEnvelopeError(ValueError):
    """The bytes are not a seed envelope this module opens; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class SeedEnvelope:
    """The members of a seed envelope, decoded and checked."""

    wrapped_dek: bytes
    key_id: str
    payload: bytes = field(repr=False)
    timestamp: str


def _refuse_constant(name: str) -> object:
    """NaN and Infinity are not JSON; Python's parser accepts them unless told otherwise."""
    raise SeedEnvelopeError(f"the envelope JSON holds {name}")


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose member names are unique: a repeated name is refused, not replaced."""
    record = dict(pairs)
    if len(record) != len(pairs):
        raise SeedEnvelopeError("the envelope JSON repeats a member")
    return record


def _b64(text: bytes | str, what: str) -> bytes:
    """Strict standard base64: the alphabet and padding only."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SeedEnvelopeError(f"{what} is not base64") from None


def _record(text: bytes, max_bytes: int) -> dict[str, object]:
    """The envelope's JSON object, bounded before it is decoded."""
    if len(text) > max_bytes:
        raise SeedEnvelopeError(f"the envelope is longer than {max_bytes} bytes")
    raw = _b64(text, "the envelope")
    try:
        record = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_refuse_constant
        )
    except SeedEnvelopeError:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise SeedEnvelopeError("the envelope is not UTF-8 JSON") from None
    if not isinstance(record, dict) or record.keys() != _MEMBERS:
        raise SeedEnvelopeError("the envelope is not an object of exactly the seed's members")
    return record


def _text(record: dict[str, object], name: str, check: Callable[[str], bool]) -> str:
    """A string member that passes its check."""
    value = record[name]
    if not isinstance(value, str) or not check(value):
        raise SeedEnvelopeError(f"{name} is not a string of the allowed length")
    return value


def parse_seed_envelope(text: bytes, *, max_bytes: int) -> SeedEnvelope:
    """Decode and check a stored seed envelope (its base64 text as ASCII bytes)."""
    record = _record(text, max_bytes)
    version = record["version"]
    if type(version) is not int or version != SEED_VERSION:
        raise SeedEnvelopeError("version is not 1")
    if record["algorithm"] != SEED_ALGORITHM:
        raise SeedEnvelopeError("algorithm is not AES-256-GCM")
    key_id = _text(record, "key_id", lambda s: 0 < len(s) <= MAX_KEY_ID_CHARS)
    timestamp = _text(record, "timestamp", lambda s: len(s) <= MAX_TIMESTAMP_CHARS)
    # base64 of the largest wrapped DEK, so nothing longer is ever decoded
    longest = 4 * -(-MAX_WRAPPED_DEK_BYTES // 3)
    wrapped = _b64(_text(record, "encrypted_dek", lambda s: len(s) <= longest), "encrypted_dek")
    if not 0 < len(wrapped) <= MAX_WRAPPED_DEK_BYTES:
        raise SeedEnvelopeError(f"encrypted_dek is not 1 to {MAX_WRAPPED_DEK_BYTES} bytes")
    payload = _b64(_text(record, "encrypted_data", lambda _: True), "encrypted_data")
    if len(payload) < NONCE_SIZE + TAG_SIZE:
        raise SeedEnvelopeError("encrypted_data is shorter than a nonce and a tag")
    return SeedEnvelope(wrapped, key_id, payload, timestamp)


def open_seed_payload(dek: bytes | bytearray, payload: bytes) -> bytes:
    """Authenticate and decrypt ``nonce ‖ ciphertext ‖ tag`` under a 32-byte DEK, no AAD."""
    if len(dek) != DEK_SIZE:
        raise SeedEnvelopeError(f"the DEK is not {DEK_SIZE} bytes")
    if len(payload) < NONCE_SIZE + TAG_SIZE:
        raise SeedEnvelopeError("encrypted_data is shorter than a nonce and a tag")
    try:
        return AESGCM(dek).decrypt(payload[:NONCE_SIZE], payload[NONCE_SIZE:], None)
    except InvalidTag:
        raise SeedEnvelopeError("encrypted_data does not authenticate under the DEK") from None
