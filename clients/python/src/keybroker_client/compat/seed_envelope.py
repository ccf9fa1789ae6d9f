"""The envelope format of ``ecl_crypto_utility``, read (to migrate) and written (custom backends).

The seed's ``EnvelopeEncryptor`` returned standard base64 of a JSON object::

    {"version": 1, "encrypted_dek": "<base64>", "key_id": "<KMS key id>",
     "encrypted_data": "<base64>", "algorithm": "AES-256-GCM", "timestamp": "<ISO 8601 UTC>"}

``encrypted_dek`` is what the backend's ``encrypt_key`` returned for the DEK;
``encrypted_data`` is the symmetric format under the DEK, with no associated data:
``base64(nonce ‖ ciphertext ‖ tag)``. The broker's envelopes are binary and start with their
format byte (docs/wire-format.md), so the two are told apart by their first decoded byte.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from ._util import b64decode_text
from .exceptions import EnvelopeError

__all__ = [
    "SEED_ALGORITHM",
    "SEED_VERSION",
    "SeedEnvelope",
    "build_seed_envelope",
    "decode_envelope",
    "envelope_kind",
    "parse_seed_envelope",
]

SEED_VERSION: Final = 1
SEED_ALGORITHM: Final = "AES-256-GCM"
_BROKER_FORMATS: Final = frozenset({0x01, 0x02})
_FIELDS: Final = ("encrypted_dek", "key_id", "encrypted_data")


@dataclass(frozen=True, slots=True)
class SeedEnvelope:
    """The fields of a seed envelope that opening it needs."""

    encrypted_dek: str
    key_id: str
    encrypted_data: str
    timestamp: str


def envelope_kind(raw: bytes) -> Literal["seed", "broker", "unknown"]:
    """Which format decoded envelope bytes are in: JSON object, broker binary, or neither."""
    if raw[:1] == b"{":
        return "seed"
    if raw[:1] and raw[0] in _BROKER_FORMATS:
        return "broker"
    return "unknown"


def decode_envelope(envelope_data: object) -> bytes:
    """The bytes under an envelope's base64 text; EnvelopeError when it is not base64."""
    raw = b64decode_text("envelope_data", envelope_data)
    if not raw:
        raise EnvelopeError("envelope_data is not the base64 text of an envelope")
    return raw


def parse_seed_envelope(raw: bytes) -> SeedEnvelope:
    """Read a decoded seed envelope, checking its version and algorithm as the seed did."""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError("envelope is not valid JSON", exc) from exc
    if not isinstance(record, dict):
        raise EnvelopeError("envelope is not a JSON object")
    version = record.get("version")
    if version != SEED_VERSION or isinstance(version, bool):
        raise EnvelopeError(f"unsupported envelope version {version!r} (expected 1)")
    if record.get("algorithm", SEED_ALGORITHM) != SEED_ALGORITHM:
        raise EnvelopeError(f"unsupported envelope algorithm {record.get('algorithm')!r}")
    for name in _FIELDS:
        if not isinstance(record.get(name), str) or not record[name]:
            raise EnvelopeError(f"envelope field {name} must be a non-empty string")
    timestamp = record.get("timestamp", "")
    return SeedEnvelope(
        encrypted_dek=record["encrypted_dek"],
        key_id=record["key_id"],
        encrypted_data=record["encrypted_data"],
        timestamp=timestamp if isinstance(timestamp, str) else "",
    )


def build_seed_envelope(encrypted_dek: str, key_id: str, encrypted_data: str) -> str:
    """Write a seed envelope (base64 of its JSON), timestamped now in UTC."""
    record = {
        "version": SEED_VERSION,
        "encrypted_dek": encrypted_dek,
        "key_id": key_id,
        "encrypted_data": encrypted_data,
        "algorithm": SEED_ALGORITHM,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    return base64.b64encode(json.dumps(record).encode("utf-8")).decode("ascii")
