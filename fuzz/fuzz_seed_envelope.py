"""Fuzz the reader of ecl_crypto_utility envelopes (broker/core/seed_envelope.py).

An input is: byte 0, whose lowest bit says what follows: 1, the stored text itself (base64 of
JSON); 0, the JSON, which the harness base64-encodes first, so mutations reach the members.
For every input:

* `parse_seed_envelope` raises nothing but SeedEnvelopeError, and refuses any text longer than
  its `max_bytes` before decoding it;
* what it accepts holds to the seed's format, checked independently with json: exactly the six
  members, version the integer 1, algorithm "AES-256-GCM", and every length within its bound;
* `open_seed_payload` raises nothing but SeedEnvelopeError, and opens only payloads the seeds
  sealed, to their plaintext;
* `open_seed_envelope` (OpenSeedEnvelope's use case), over a backend that unwraps the seeds'
  wrapped DEK, answers the plaintext or the fixed DecryptionFailedError, nothing else.

    .venv/bin/python fuzz/fuzz_seed_envelope.py -max_total_time=60
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import sys
from typing import TYPE_CHECKING, cast

from _harness import FindingError, Harness, Target, instrumented, main
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

with instrumented():
    from broker.core.aead import NONCE_SIZE, TAG_SIZE
    from broker.core.seed_envelope import (
        MAX_KEY_ID_CHARS,
        MAX_TIMESTAMP_CHARS,
        MAX_WRAPPED_DEK_BYTES,
        SEED_ALGORITHM,
        SeedEnvelope,
        SeedEnvelopeError,
        open_seed_payload,
        parse_seed_envelope,
    )
    from broker.errors import (
        DECRYPTION_FAILED_MESSAGE,
        DecryptionFailedError,
        KmsInvalidCiphertextError,
    )
    from broker.services.envelope import EnvelopeLimits
    from broker.services.keys import ResolvedKey
    from broker.services.seed import SEED_OVERHEAD_BYTES, open_seed_envelope

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from broker.kms.base import KmsBackend

DEK = os.urandom(32)  # new on every run: only this run's seeds can open
WRAPPED = b"kms ciphertext blob"
# What the daemon accepts by default: the plaintext limit plus the seed's overhead.
MAX_BYTES = EnvelopeLimits().max_plaintext_bytes + SEED_OVERHEAD_BYTES
MEMBERS = {"version", "encrypted_dek", "key_id", "encrypted_data", "algorithm", "timestamp"}
_RAW_TEXT = 1


class _SeedKms:
    """The KMS key that wrapped the seeds' DEK: it unwraps WRAPPED and refuses anything else."""

    scheme = "aws-kms"

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """The DEK for the seeds' wrapped DEK; KmsInvalidCiphertextError for any other."""
        del key_id, key_version, context
        if wrapped != WRAPPED:
            raise KmsInvalidCiphertextError
        return bytearray(DEK)


_KEY = ResolvedKey(
    "legacy", "aws-kms://alias/legacy", "envelope", cast("KmsBackend", _SeedKms()), "alias/legacy"
)


def _record(plaintext: bytes, **changes: object) -> dict[str, object]:
    """The six members the seed wrote, sealed under DEK, with some replaced."""
    nonce = os.urandom(NONCE_SIZE)
    record: dict[str, object] = {
        "version": 1,
        "encrypted_dek": base64.b64encode(WRAPPED).decode(),
        "key_id": "arn:aws:kms:us-east-1:123456789012:key/abcd-1234",
        "encrypted_data": base64.b64encode(
            nonce + AESGCM(DEK).encrypt(nonce, plaintext, None)
        ).decode(),
        "algorithm": SEED_ALGORITHM,
        "timestamp": "2026-04-08T12:00:00+00:00",
    }
    record.update(changes)
    return record


def _seed_records() -> list[tuple[dict[str, object], bytes]]:
    """Envelopes of several sizes, and members at their bounds, with their plaintexts."""
    at_bounds = {
        "key_id": "k" * MAX_KEY_ID_CHARS,
        "timestamp": "t" * MAX_TIMESTAMP_CHARS,
        "encrypted_dek": base64.b64encode(bytes(MAX_WRAPPED_DEK_BYTES)).decode(),
    }
    plaintexts = (b"", b"card 4111", bytes(range(256)) * 4)
    records = [(_record(p), p) for p in plaintexts]
    return [*records, (_record(b"bounds", **at_bounds), b"bounds")]


def _text(data: bytes) -> bytes:
    """The stored text the input stands for."""
    body = data[1:]
    return body if data[0] & _RAW_TEXT else base64.b64encode(body)


def check_format(text: bytes, seed: SeedEnvelope) -> None:
    """What the parser accepted, read again with json alone: the seed's members and bounds."""
    try:
        record = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise FindingError(f"accepted text that is not base64 JSON: {exc}") from None
    if not isinstance(record, dict) or record.keys() != MEMBERS:
        raise FindingError("accepted an object without exactly the seed's members")
    if type(record["version"]) is not int or record["version"] != 1:
        raise FindingError(f"accepted version {record['version']!r}")
    if record["algorithm"] != SEED_ALGORITHM:
        raise FindingError("accepted another algorithm")
    bounded = (
        0 < len(seed.wrapped_dek) <= MAX_WRAPPED_DEK_BYTES
        and 0 < len(seed.key_id) <= MAX_KEY_ID_CHARS
        and len(seed.timestamp) <= MAX_TIMESTAMP_CHARS
        and len(seed.payload) >= NONCE_SIZE + TAG_SIZE
    )
    if not bounded:
        raise FindingError("accepted a member outside its bound")


def check_parse(text: bytes, sealed: dict[bytes, bytes]) -> None:
    """Parse, refuse past max_bytes, check what was accepted and open its payload."""
    if text:
        try:
            parse_seed_envelope(text, max_bytes=len(text) - 1)
        except SeedEnvelopeError:
            pass
        else:
            raise FindingError("a text longer than max_bytes was accepted")
    try:
        seed = parse_seed_envelope(text, max_bytes=MAX_BYTES)
    except SeedEnvelopeError:
        return
    check_format(text, seed)
    try:
        plaintext = open_seed_payload(DEK, seed.payload)
    except SeedEnvelopeError:
        return
    if sealed.get(seed.payload) != plaintext:
        raise FindingError("a payload the seeds did not seal opened")


async def check_service(text: bytes) -> None:
    """OpenSeedEnvelope's use case answers a plaintext or the fixed decryption failure."""
    try:
        await open_seed_envelope(_KEY, text, EnvelopeLimits().max_plaintext_bytes)
    except DecryptionFailedError as exc:
        if exc.message != DECRYPTION_FAILED_MESSAGE:
            raise FindingError("opening failed with another message") from exc


class SeedEnvelopeHarness(Harness):
    """parse_seed_envelope, open_seed_payload and open_seed_envelope on mutated envelopes."""

    name = "seed_envelope"
    max_len = 32768  # room for a wrapped DEK and a key id past their bounds

    def target(self, work: Path) -> Target:
        """Seal seed envelopes as ecl_crypto_utility did; check every input against them."""
        del work
        loop = asyncio.new_event_loop()
        records = _seed_records()
        sealed = {base64.b64decode(str(r["encrypted_data"])): p for r, p in records}

        def test_one(data: bytes) -> None:
            if not data:
                return
            text = _text(data)
            check_parse(text, sealed)
            loop.run_until_complete(check_service(text))

        seeds = []
        for record, _ in records:
            plain_json = json.dumps(record).encode()
            seeds += [b"\0" + plain_json, b"\1" + base64.b64encode(plain_json)]
        return Target(test_one, seeds)


if __name__ == "__main__":
    sys.exit(main(SeedEnvelopeHarness()))
