import hashlib
import hmac
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.core.aead import DataKey
from broker.core.context import EMPTY_CONTEXT, canonical_context
from broker.core.stream import seal_stream
from broker.core.wire import FORMAT_STREAM, FORMAT_V1, encode_prefix, parse_envelope, seal_v1

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def _load(name):
    document = json.loads((VECTORS / name).read_text("utf-8"))
    return [pytest.param(v, id=v["description"]) for v in document["vectors"]]


V1 = _load("envelope-v1.json")
V2 = _load("stream-v2.json")


def _hkdf(ikm, salt, info):
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def _reference_open(dek, envelope, context):
    """Open an envelope straight from docs/wire-format.md, sharing no code with broker.core."""
    version, algorithm, flags, n = envelope[:4]
    assert algorithm == 1
    pos = 4 + n + 4
    (w,) = struct.unpack(">H", envelope[pos : pos + 2])
    pos += 2 + w
    if flags & 1:
        (c,) = struct.unpack(">H", envelope[pos : pos + 2])
        context = envelope[pos + 2 : pos + 2 + c]
        pos += 2 + c
    commitment = envelope[pos : pos + 32]
    assert hmac.compare_digest(commitment, _hkdf(dek, b"", b"keybroker/v1/commitment"))
    pos += 32
    if version == 1:
        header = envelope[: pos + 12]
        key = AESGCM(_hkdf(dek, b"", b"keybroker/v1/aes-256-gcm"))
        return key.decrypt(header[-12:], envelope[pos + 12 :], header + context)
    (size,) = struct.unpack(">I", envelope[pos : pos + 4])
    header = envelope[: pos + 20]
    key = AESGCM(_hkdf(dek, header[-16:], b"keybroker/v1/stream-aes-256-gcm"))
    aad = hashlib.sha256(header + context).digest()
    body = envelope[len(header) :]
    segments = [body[i : i + size + 16] for i in range(0, len(body), size + 16)] or [b""]
    out = b""
    for index, segment in enumerate(segments):
        last = b"\x01" if index == len(segments) - 1 else b"\x00"
        out += key.decrypt(bytes(7) + struct.pack(">I", index) + last, segment, aad)
    return out


def _inputs(vector):
    dek = bytes.fromhex(vector["dek"])
    context = canonical_context(vector["context"])
    return dek, context, bytes.fromhex(vector["plaintext"]), bytes.fromhex(vector["envelope"])


def _prefix(vector, version, dek, context):
    return encode_prefix(
        version=version,
        key_name=vector["key_name"],
        key_version=vector["key_version"],
        wrapped_dek=bytes.fromhex(vector["wrapped_dek"]),
        commitment=DataKey.from_dek(dek).commitment,
        stored_context=context if vector["store_context"] else None,
    )


class TestGoldenVectors:
    """tests/vectors: envelopes that every future release must still open."""

    @pytest.mark.parametrize("vector", V1 + V2)
    def test_decrypts(self, open_envelope, vector):
        """Each golden envelope opens to its plaintext with its context presented."""
        dek, context, plaintext, envelope = _inputs(vector)
        assert open_envelope(DataKey.from_dek(dek), envelope, context) == plaintext

    @pytest.mark.parametrize("vector", [v for v in V1 + V2 if v.values[0]["store_context"]])
    def test_stored_context_decrypts_without_presenting_it(self, open_envelope, vector):
        """A stored-context vector opens with no context presented."""
        dek, _, plaintext, envelope = _inputs(vector)
        assert open_envelope(DataKey.from_dek(dek), envelope, EMPTY_CONTEXT) == plaintext

    @pytest.mark.parametrize("vector", V1 + V2)
    def test_reference_reader_agrees(self, vector):
        """An independent reading of the spec opens every vector, so the spec and code agree."""
        dek, context, plaintext, envelope = _inputs(vector)
        assert _reference_open(dek, envelope, context) == plaintext

    @pytest.mark.parametrize("vector", V1)
    def test_v1_reseal_reproduces_bytes(self, vector):
        """Sealing the same inputs again gives the same bytes, so format drift is caught."""
        dek, context, plaintext, envelope = _inputs(vector)
        prefix = _prefix(vector, FORMAT_V1, dek, context)
        nonce = bytes.fromhex(vector["nonce"])
        assert seal_v1(DataKey.from_dek(dek), prefix, plaintext, context, nonce=nonce) == envelope

    @pytest.mark.parametrize("vector", V2)
    def test_v2_reseal_reproduces_bytes(self, vector):
        """Streaming the same inputs again gives the same bytes, so format drift is caught."""
        dek, context, plaintext, envelope = _inputs(vector)
        prefix = _prefix(vector, FORMAT_STREAM, dek, context)
        resealed = seal_stream(
            DataKey.from_dek(dek),
            prefix,
            plaintext,
            context,
            segment_size=vector["segment_size"],
            salt=bytes.fromhex(vector["salt"]),
        )
        assert resealed == envelope

    @pytest.mark.parametrize("vector", V1 + V2)
    def test_header_fields_match_the_inputs(self, vector):
        """The parsed header carries exactly the recorded key name, version and wrapped DEK."""
        _, context, _, envelope = _inputs(vector)
        header, _ = parse_envelope(envelope)
        assert header.key_name == vector["key_name"]
        assert header.key_version == vector["key_version"]
        assert header.wrapped_dek.hex() == vector["wrapped_dek"]
        assert header.stored_context == (context if vector["store_context"] else None)

    def test_every_kind_of_envelope_is_covered(self):
        """The vector set keeps covering stored contexts, empty plaintexts and many segments."""
        vectors = [p.values[0] for p in V1 + V2]
        assert any(v["store_context"] for v in vectors if "nonce" in v)
        assert any(v["store_context"] for v in vectors if "salt" in v)
        assert any(v["plaintext"] == "" for v in vectors if "nonce" in v)
        assert any(v["plaintext"] == "" for v in vectors if "salt" in v)
        assert any(len(v["plaintext"]) // 2 > 2 * v.get("segment_size", 1 << 30) for v in vectors)
