"""The seed envelope parser: exact members and types, every length bounded before use.

Envelopes are built here from the seed README's description with json, base64 and pyca,
never with the module under test.
"""

import base64
import contextlib
import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.seed_envelope import (
    MAX_KEY_ID_CHARS,
    MAX_TIMESTAMP_CHARS,
    MAX_WRAPPED_DEK_BYTES,
    SeedEnvelope,
    SeedEnvelopeError,
    open_seed_payload,
    parse_seed_envelope,
)

DEK = bytes(range(32))
LIMIT = 1 << 20


def payload(plaintext: bytes, dek: bytes = DEK) -> bytes:
    """The seed's symmetric format: nonce ‖ AES-256-GCM(DEK, plaintext, no AAD) ‖ tag."""
    nonce = os.urandom(12)
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, None)


def members(**changes: object) -> dict[str, object]:
    """The six members the seed writes, with some replaced."""
    record: dict[str, object] = {
        "version": 1,
        "encrypted_dek": base64.b64encode(b"kms ciphertext blob").decode(),
        "key_id": "arn:aws:kms:us-east-1:123456789012:key/abcd-1234",
        "encrypted_data": base64.b64encode(payload(b"card 4111")).decode(),
        "algorithm": "AES-256-GCM",
        "timestamp": "2026-04-08T12:00:00+00:00",
    }
    record.update(changes)
    return record


def stored(record: object) -> bytes:
    """The envelope as the seed stored it: base64 of the JSON text."""
    return base64.b64encode(json.dumps(record).encode())


def refused(text: bytes, match: str, max_bytes: int = LIMIT) -> None:
    """The parser refuses the text with a message containing `match`."""
    with pytest.raises(SeedEnvelopeError, match=match):
        parse_seed_envelope(text, max_bytes=max_bytes)


class TestParse:
    """parse_seed_envelope: what the seed wrote is read back, member by member."""

    def test_members_are_decoded(self):
        """The wrapped DEK and payload come back as bytes, key id and timestamp as text."""
        data = payload(b"x")
        text = stored(members(encrypted_data=base64.b64encode(data).decode()))

        seed = parse_seed_envelope(text, max_bytes=LIMIT)

        assert seed == SeedEnvelope(
            b"kms ciphertext blob",
            "arn:aws:kms:us-east-1:123456789012:key/abcd-1234",
            data,
            "2026-04-08T12:00:00+00:00",
        )

    def test_payload_opens_under_the_dek(self):
        """open_seed_payload returns the plaintext the seed sealed."""
        seed = parse_seed_envelope(stored(members()), max_bytes=LIMIT)

        assert open_seed_payload(bytearray(DEK), seed.payload) == b"card 4111"

    def test_payload_is_not_in_repr(self):
        """Ciphertext stays out of logs that print the parsed envelope."""
        seed = parse_seed_envelope(stored(members()), max_bytes=LIMIT)

        assert "payload" not in repr(seed)


class TestBounds:
    """Each length is checked, at the limit and one past it."""

    def test_whole_envelope(self):
        """A text one byte over max_bytes is refused before it is decoded."""
        text = stored(members())

        assert parse_seed_envelope(text, max_bytes=len(text))
        refused(text, "longer than", max_bytes=len(text) - 1)

    @pytest.mark.parametrize(
        ("name", "good", "bad"),
        [
            ("key_id", "k" * MAX_KEY_ID_CHARS, "k" * (MAX_KEY_ID_CHARS + 1)),
            ("key_id", "k", ""),
            ("timestamp", "t" * MAX_TIMESTAMP_CHARS, "t" * (MAX_TIMESTAMP_CHARS + 1)),
        ],
        ids=["key-id-long", "key-id-empty", "timestamp-long"],
    )
    def test_text_members(self, name, good, bad):
        """key_id is 1 to 2048 characters, timestamp at most 64."""
        assert parse_seed_envelope(stored(members(**{name: good})), max_bytes=LIMIT)
        refused(stored(members(**{name: bad})), f"{name} is not a string of the allowed length")

    def test_wrapped_dek(self):
        """The wrapped DEK is 1 to 6144 bytes (the largest AWS KMS ciphertext)."""
        largest = base64.b64encode(bytes(MAX_WRAPPED_DEK_BYTES)).decode()
        larger = base64.b64encode(bytes(MAX_WRAPPED_DEK_BYTES + 1)).decode()

        seed = parse_seed_envelope(stored(members(encrypted_dek=largest)), max_bytes=LIMIT)
        assert len(seed.wrapped_dek) == MAX_WRAPPED_DEK_BYTES
        refused(stored(members(encrypted_dek=larger)), "encrypted_dek is not")
        refused(stored(members(encrypted_dek="")), "encrypted_dek is not 1 to")

    def test_payload_needs_nonce_and_tag(self):
        """28 bytes (nonce and tag of an empty plaintext) is the shortest payload."""
        shortest = base64.b64encode(payload(b"")).decode()
        shorter = base64.b64encode(bytes(27)).decode()

        assert parse_seed_envelope(stored(members(encrypted_data=shortest)), max_bytes=LIMIT)
        refused(stored(members(encrypted_data=shorter)), "shorter than a nonce and a tag")


class TestStrictness:
    """Only the seed's exact shape is read."""

    @pytest.mark.parametrize(
        ("record", "match"),
        [
            (members(version=2), "version is not 1"),
            (members(version="1"), "version is not 1"),
            (members(version=1.0), "version is not 1"),
            (members(version=True), "version is not 1"),
            (members(algorithm="AES-128-CBC"), "algorithm is not AES-256-GCM"),
            (members(algorithm=None), "algorithm is not AES-256-GCM"),
            (members(key_id=7), "key_id is not a string"),
            (members(timestamp=None), "timestamp is not a string"),
            (members(encrypted_dek=["AAAA"]), "encrypted_dek is not a string"),
            (members(encrypted_dek="not base64!"), "encrypted_dek is not base64"),
            (members(encrypted_data="QUFB\nQUFB"), "encrypted_data is not base64"),
            (members(encrypted_data="AAAé"), "encrypted_data is not base64"),
            (members(extra="x"), "exactly the seed's members"),
            ({k: v for k, v in members().items() if k != "timestamp"}, "exactly the seed's"),
            ([members()], "exactly the seed's members"),
        ],
        ids=[
            "version-2",
            "version-text",
            "version-float",
            "version-bool",
            "algorithm",
            "algorithm-null",
            "key-id-number",
            "timestamp-null",
            "dek-list",
            "dek-not-base64",
            "data-newline",
            "data-non-ascii",
            "extra-member",
            "missing-member",
            "not-an-object",
        ],
    )
    def test_shape(self, record, match):
        """Wrong values, types and member sets are refused, naming what is wrong."""
        refused(stored(record), match)

    def test_repeated_member(self):
        """A member given twice is refused rather than silently replaced."""
        text = json.dumps(members())[:-1] + ', "version": 1}'

        refused(base64.b64encode(text.encode()), "repeats a member")

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    def test_non_json_constants(self, constant):
        """NaN and Infinity, which Python's json accepts, are not JSON."""
        text = json.dumps(members())[:-1] + f', "x": {constant}}}'

        refused(base64.b64encode(text.encode()), "holds")

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            (b"%%%%", "the envelope is not base64"),
            (base64.b64encode(json.dumps(members()).encode()) + b"\n", "not base64"),
            (base64.b64encode(b"\xff\xfe{}"), "not UTF-8 JSON"),
            (base64.b64encode(b"{not json"), "not UTF-8 JSON"),
            (base64.b64encode(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "JSON"),
            (base64.b64encode(b'{"version": 1' + b"0" * 5000 + b"}"), "not UTF-8 JSON"),
        ],
        ids=["not-base64", "trailing-newline", "not-utf8", "not-json", "deep", "huge-int"],
    )
    def test_undecodable(self, text, match):
        """Text that is not base64 of UTF-8 JSON is refused, however it fails."""
        refused(text, match)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes_parse_or_fail_cleanly(self, data):
        """Whatever the bytes, the parser returns an envelope or raises SeedEnvelopeError."""
        with contextlib.suppress(SeedEnvelopeError):
            parse_seed_envelope(base64.b64encode(data), max_bytes=LIMIT)


class TestOpenPayload:
    """open_seed_payload: AES-256-GCM under a 32-byte DEK, no associated data."""

    @pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
    def test_dek_must_be_32_bytes(self, size):
        """A DEK of any other length is refused before AES is keyed."""
        with pytest.raises(SeedEnvelopeError, match="DEK is not 32 bytes"):
            open_seed_payload(bytes(size), payload(b"x"))

    def test_wrong_dek(self):
        """Another DEK does not authenticate the payload."""
        with pytest.raises(SeedEnvelopeError, match="does not authenticate"):
            open_seed_payload(bytes(32), payload(b"x"))

    @pytest.mark.parametrize("at", [0, 11, 12, -17, -1])
    def test_tampered(self, at):
        """A flipped bit in nonce, ciphertext or tag is refused."""
        data = bytearray(payload(b"secret"))
        data[at] ^= 1

        with pytest.raises(SeedEnvelopeError, match="does not authenticate"):
            open_seed_payload(DEK, bytes(data))

    def test_too_short(self):
        """Fewer than 28 bytes cannot hold a nonce and a tag."""
        with pytest.raises(SeedEnvelopeError, match="shorter than"):
            open_seed_payload(DEK, bytes(27))
