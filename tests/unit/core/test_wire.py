import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.aead import AeadError, DataKey
from broker.core.context import EMPTY_CONTEXT, canonical_context
from broker.core.wire import (
    FORMAT_STREAM,
    FORMAT_V1,
    KEY_NAME_PATTERN,
    MAX_HEADER_SIZE,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    EnvelopeFormatError,
    Header,
    encode_prefix,
    from_text,
    open_v1,
    parse_envelope,
    parse_header,
    resolve_context,
    seal_v1,
    to_text,
    validate_key_name,
)

DK = DataKey.from_dek(bytes(range(32)))
OTHER = DataKey.from_dek(bytes(range(50, 82)))
WRAPPED = b"wrapped-dek:" * 5
CONTEXT = canonical_context({"tenant": "acme", "purpose": "tests"})
OTHER_CONTEXT = canonical_context({"tenant": "evil", "purpose": "tests"})
NONCE = bytes(range(12))
FAILURES = (AeadError, EnvelopeFormatError)


def _prefix(**fields):
    f = {
        "version": FORMAT_V1,
        "key_name": "default",
        "key_version": 7,
        "wrapped": WRAPPED,
        "stored": None,
        "dk": DK,
        **fields,
    }
    return encode_prefix(
        version=f["version"],
        key_name=f["key_name"],
        key_version=f["key_version"],
        wrapped_dek=f["wrapped"],
        commitment=f["dk"].commitment,
        stored_context=f["stored"],
    )


def _seal(plaintext=b"attack at dawn", *, stored=False, **fields):
    prefix = _prefix(stored=CONTEXT if stored else None, **fields)
    return seal_v1(DK, prefix, plaintext, CONTEXT)


def _presented(stored):
    return EMPTY_CONTEXT if stored else CONTEXT


def _u16(n):
    return n.to_bytes(2, "big")


def _u32(n):
    return n.to_bytes(4, "big")


class TestKeyNames:
    """validate_key_name and KEY_NAME_PATTERN: which logical key names exist."""

    @pytest.mark.parametrize("name", ["default", "a", "0", "pii.v2", "A-b_c.d", "x" * 64])
    def test_valid_names(self, name):
        """Ordinary names are returned unchanged."""
        assert validate_key_name(name) == name

    @pytest.mark.parametrize(
        "name", ["", "x" * 65, ".hidden", "-x", "_x", "a/b", "a b", "é", "abc\n", "a\x00"]
    )
    def test_invalid_names(self, name):
        """Names outside the pattern are refused with the documented message."""
        with pytest.raises(ValueError, match="key name must be") as caught:
            validate_key_name(name)
        assert str(caught.value) == (
            "key name must be 1..64 characters of [A-Za-z0-9._-], starting with a letter or digit"
        )

    def test_pattern_is_anchored_by_fullmatch(self):
        """The exported pattern accepts exactly the valid names when used with fullmatch."""
        assert KEY_NAME_PATTERN.fullmatch("payments")
        assert not KEY_NAME_PATTERN.fullmatch("pay ments")


class TestEncodePrefix:
    """encode_prefix: the header bytes a DEK's messages share."""

    def test_layout(self):
        """Fields appear in wire order with big-endian lengths."""
        assert _prefix(key_name="k", key_version=0x01020304, wrapped=b"W") == (
            b"\x01\x01\x00\x01k\x01\x02\x03\x04\x00\x01W" + DK.commitment
        )

    def test_layout_with_stored_context(self):
        """A stored context sets flag bit 0 and sits between the wrapped DEK and commitment."""
        prefix = _prefix(
            version=FORMAT_STREAM, key_name="k", key_version=0, wrapped=b"W", stored=CONTEXT
        )
        assert prefix == (
            b"\x02\x01\x01\x01k\x00\x00\x00\x00\x00\x01W"
            + _u16(len(CONTEXT))
            + CONTEXT
            + DK.commitment
        )

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"version": 0}, "format version must be 1 or 2"),
            ({"version": 3}, "format version must be 1 or 2"),
            ({"key_name": "bad name"}, "key name must be 1..64 characters"),
            ({"key_version": -1}, "key version must be 0..2\\*\\*32-1"),
            ({"key_version": 2**32}, "key version must be 0..2\\*\\*32-1"),
            ({"wrapped": b""}, "wrapped DEK must be 1..2048 bytes"),
            ({"wrapped": bytes(2049)}, "wrapped DEK must be 1..2048 bytes"),
            ({"stored": b"\x00"}, "truncated"),
            ({"stored": b"\x00\x00\x00"}, "trailing bytes"),
        ],
    )
    def test_rejects_out_of_bound_fields(self, fields, message):
        """Nothing out of bounds ever reaches a header."""
        with pytest.raises(ValueError, match=message):
            _prefix(**fields)

    def test_rejects_wrong_commitment_size(self):
        """The commitment is exactly 32 bytes."""
        with pytest.raises(ValueError, match="commitment must be 32 bytes"):
            encode_prefix(
                version=1,
                key_name="k",
                key_version=0,
                wrapped_dek=b"w",
                commitment=bytes(31),
                stored_context=None,
            )

    def test_bounds_at_the_limit_are_accepted(self):
        """The longest name, largest version and largest wrapped DEK all encode and parse."""
        prefix = _prefix(key_name="k" * 64, key_version=2**32 - 1, wrapped=bytes(2048))
        header = parse_header(prefix + NONCE)
        assert header.key_name == "k" * 64
        assert header.key_version == 2**32 - 1
        assert len(header.wrapped_dek) == 2048


_headers = st.builds(
    dict,
    version=st.sampled_from([FORMAT_V1, FORMAT_STREAM]),
    key_name=st.from_regex(KEY_NAME_PATTERN, fullmatch=True),
    key_version=st.integers(0, 2**32 - 1),
    wrapped=st.binary(min_size=1, max_size=300),
    stored=st.none()
    | st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3).map(
        canonical_context
    ),
    commitment=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=12, max_size=12),
    segment_size=st.integers(MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE),
    salt=st.binary(min_size=16, max_size=16),
)


def _raw_header(f):
    prefix = encode_prefix(
        version=f["version"],
        key_name=f["key_name"],
        key_version=f["key_version"],
        wrapped_dek=f["wrapped"],
        commitment=f["commitment"],
        stored_context=f["stored"],
    )
    if f["version"] == FORMAT_V1:
        return prefix + f["nonce"]
    return prefix + _u32(f["segment_size"]) + f["salt"]


_V1_STORED_HEADER = parse_header(_seal(stored=True)).raw
_V2_HEADER = _prefix(version=FORMAT_STREAM) + _u32(4096) + bytes(16)
_V1_HEADER = parse_header(_seal()).raw
_NAME_AND_VERSION = b"\x01a" + _u32(0)


class TestParseHeader:
    """parse_header: fields out of bytes, None while too short, errors as soon as malformed."""

    @settings(max_examples=150)
    @given(fields=_headers, tail=st.binary(max_size=20), data=st.data())
    def test_round_trip_and_every_prefix_is_incomplete(self, fields, tail, data):
        """Encoded fields parse back; any strict prefix of a header is 'need more bytes'."""
        raw = _raw_header(fields)
        header = parse_header(raw + tail)
        assert header.raw == raw
        assert (header.version, header.key_name, header.key_version) == (
            fields["version"],
            fields["key_name"],
            fields["key_version"],
        )
        assert header.wrapped_dek == fields["wrapped"]
        assert header.stored_context == fields["stored"]
        assert header.commitment == fields["commitment"]
        if fields["version"] == FORMAT_V1:
            assert (header.nonce, header.segment_size, header.salt) == (fields["nonce"], 0, b"")
        else:
            assert (header.nonce, header.segment_size, header.salt) == (
                b"",
                fields["segment_size"],
                fields["salt"],
            )
        cut = data.draw(st.integers(0, len(raw) - 1))
        assert parse_header(raw[:cut]) is None

    @pytest.mark.parametrize(
        "raw", [_V1_HEADER, _V1_STORED_HEADER, _V2_HEADER], ids=["v1", "v1-stored", "v2"]
    )
    def test_every_strict_prefix_returns_none(self, raw):
        """A streaming reader can keep reading until the whole header has arrived."""
        for end in range(len(raw)):
            assert parse_header(raw[:end]) is None
        assert parse_header(raw) is not None

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_accepts_bytes_like(self, kind):
        """Headers parse from network buffers without copying them first."""
        header = parse_header(kind(_V1_HEADER + b"body"))
        assert isinstance(header, Header)
        assert header.raw == _V1_HEADER

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"\x00", "unknown format version 0"),
            (b"\x03", "unknown format version 3"),
            (b"\xff", "unknown format version 255"),
            (b"\x01\x00", "unknown algorithm 0"),
            (b"\x02\x02", "unknown algorithm 2"),
            (b"\x01\x01\x02", "unknown flag bits"),
            (b"\x01\x01\x80", "unknown flag bits"),
            (b"\x01\x01\x00\x00", "key name length 0"),
            (b"\x01\x01\x00\x41", "key name length 65"),
            (b"\x01\x01\x00\xff", "key name length 255"),
            (b"\x01\x01\x00\x05ab/", "key name has a character"),
            (b"\x01\x01\x00\x05.", "key name has a character"),
            (b"\x01\x01\x00\x02a\xc3", "key name has a character"),
            (b"\x01\x01\x00" + _NAME_AND_VERSION + b"\x00\x00", "wrapped DEK length 0"),
            (b"\x01\x01\x00" + _NAME_AND_VERSION + _u16(2049), "wrapped DEK length 2049"),
            (b"\x01\x01\x01" + _NAME_AND_VERSION + b"\x00\x01w\x00\x00", "stored context length 0"),
            (b"\x01\x01\x01" + _NAME_AND_VERSION + b"\x00\x01w\x00\x01", "stored context length 1"),
            (b"\x01\x01\x01" + _NAME_AND_VERSION + b"\x00\x01w" + _u16(8193), "length 8193"),
            (b"\x01\x01\x01" + _NAME_AND_VERSION + b"\x00\x01w\x00\x02\x00\x01", "not canonical"),
            (_prefix(version=FORMAT_STREAM) + _u32(4095), "segment size 4095"),
            (_prefix(version=FORMAT_STREAM) + _u32(0), "segment size 0"),
            (_prefix(version=FORMAT_STREAM) + _u32(4194305), "segment size 4194305"),
        ],
    )
    def test_rejects_malformed_bytes_as_soon_as_seen(self, data, message):
        """Malformed input is refused at the first bad byte, before the rest arrives."""
        with pytest.raises(EnvelopeFormatError, match=message):
            parse_header(data)

    def test_largest_header_fits_the_documented_maximum(self):
        """A reader that buffered MAX_HEADER_SIZE bytes always has a whole header."""
        values = {"a": 2048, "b": 2048, "c": 2048, "d": 2026}
        stored = canonical_context({k: "v" * n for k, n in values.items()})
        assert len(stored) == 8192
        prefix = _prefix(
            version=FORMAT_STREAM, key_name="k" * 64, wrapped=bytes(2048), stored=stored
        )
        header = prefix + _u32(MAX_SEGMENT_SIZE) + bytes(16)
        assert len(header) == MAX_HEADER_SIZE
        assert parse_header(header).raw == header
        assert parse_header(header[:-1]) is None

    def test_empty_input_is_incomplete(self):
        """No bytes yet is not an error."""
        assert parse_header(b"") is None


class TestParseEnvelope:
    """parse_envelope: a complete envelope split into header and body."""

    def test_splits_header_and_body(self):
        """The body is everything after the header."""
        envelope = _seal(b"p")
        header, body = parse_envelope(envelope)
        assert header.raw + body == envelope
        assert len(body) == 1 + 16

    @pytest.mark.parametrize("body_size", range(16))
    def test_rejects_body_shorter_than_tag(self, body_size):
        """A body that cannot hold the 16-byte tag is malformed, for both formats."""
        for raw in (_V1_HEADER, _V2_HEADER):
            with pytest.raises(EnvelopeFormatError, match="shorter than the 16-byte tag"):
                parse_envelope(raw + bytes(body_size))

    def test_rejects_truncated_header(self):
        """An envelope cut inside its header is malformed, not incomplete."""
        with pytest.raises(EnvelopeFormatError, match="shorter than its header"):
            parse_envelope(_V1_HEADER[:-1])


class TestResolveContext:
    """resolve_context: which context an envelope is authenticated with."""

    def test_not_stored_uses_presented(self):
        """Without a stored context the caller's context is authenticated."""
        header = parse_header(_V1_HEADER)
        assert resolve_context(header, OTHER_CONTEXT) == OTHER_CONTEXT

    @pytest.mark.parametrize("presented", [EMPTY_CONTEXT, CONTEXT])
    def test_stored_uses_stored(self, presented):
        """With a stored context the caller may present nothing or exactly the stored one."""
        header = parse_header(_V1_STORED_HEADER)
        assert resolve_context(header, presented) == CONTEXT

    def test_stored_rejects_a_different_context(self):
        """A caller presenting another context for a stored-context envelope is refused."""
        header = parse_header(_V1_STORED_HEADER)
        with pytest.raises(EnvelopeFormatError, match="differs from the stored"):
            resolve_context(header, OTHER_CONTEXT)


_SIZES = [0, 1, 15, 16, 17, 4095, 4096, 4097, 3 * 4096 + 5]


class TestSealOpenV1:
    """seal_v1 / open_v1: single-shot envelopes."""

    @pytest.mark.parametrize("stored", [False, True], ids=["presented", "stored"])
    @pytest.mark.parametrize("size", _SIZES)
    def test_round_trip(self, open_envelope, size, stored):
        """Every plaintext size comes back intact, with the context presented or stored."""
        plaintext = bytes(i % 251 for i in range(size))
        envelope = _seal(plaintext, stored=stored)
        assert len(envelope) == len(parse_header(envelope).raw) + size + 16
        assert open_envelope(DK, envelope, _presented(stored)) == plaintext

    def test_stored_context_also_opens_with_it_presented(self, open_envelope):
        """Presenting the stored context explicitly works too."""
        assert open_envelope(DK, _seal(stored=True), CONTEXT) == b"attack at dawn"

    def test_nonce_is_fresh_each_time(self):
        """Two seals of the same plaintext differ."""
        assert _seal() != _seal()

    def test_fixed_nonce_is_reproducible(self):
        """Known-answer vectors rely on a fixed nonce giving fixed bytes."""
        one = seal_v1(DK, _prefix(), b"p", CONTEXT, nonce=NONCE)
        assert one == seal_v1(DK, _prefix(), b"p", CONTEXT, nonce=NONCE)
        assert parse_header(one).nonce == NONCE

    def test_rejects_stream_prefix(self):
        """A format 2 prefix cannot seal a format 1 envelope."""
        with pytest.raises(ValueError, match="not a format 1 header prefix"):
            seal_v1(DK, _prefix(version=FORMAT_STREAM), b"p", CONTEXT)

    def test_rejects_prefix_of_another_dek(self):
        """Sealing under a DEK other than the prefix's would make an unopenable envelope."""
        with pytest.raises(ValueError, match="not made from this data key"):
            seal_v1(OTHER, _prefix(), b"p", CONTEXT)

    def test_rejects_wrong_nonce_size(self):
        """A fixed nonce must be 12 bytes."""
        with pytest.raises(ValueError, match="nonce must be 12 bytes"):
            seal_v1(DK, _prefix(), b"p", CONTEXT, nonce=bytes(8))

    def test_wrong_context_fails(self, open_envelope):
        """An envelope sealed for one tenant does not open for another."""
        with pytest.raises(AeadError):
            open_envelope(DK, _seal(), OTHER_CONTEXT)
        with pytest.raises(AeadError):
            open_envelope(DK, _seal(), EMPTY_CONTEXT)

    def test_stored_context_with_mismatching_presented_fails(self, open_envelope):
        """A stored-context envelope refuses a different presented context."""
        with pytest.raises(EnvelopeFormatError):
            open_envelope(DK, _seal(stored=True), OTHER_CONTEXT)

    @pytest.mark.parametrize(
        "swap",
        [
            {"key_name": "payments"},
            {"key_version": 8},
            {"wrapped": WRAPPED[:-1] + b"X"},
            {"stored": OTHER_CONTEXT},
        ],
        ids=["key-name", "key-version", "wrapped-dek", "stored-context"],
    )
    def test_swapping_a_header_field_fails(self, open_envelope, swap):
        """The header is authenticated, so no field can be changed after sealing."""
        header, body = parse_envelope(_seal(stored="stored" in swap))
        forged = _prefix(**{"stored": CONTEXT if "stored" in swap else None, **swap})
        with pytest.raises(AeadError):
            open_envelope(DK, forged + header.nonce + body, _presented("stored" in swap))

    def test_dropping_the_stored_context_fails(self, open_envelope):
        """Turning a stored-context envelope into one with a presented context fails."""
        header, body = parse_envelope(_seal(stored=True))
        with pytest.raises(AeadError):
            open_envelope(DK, _prefix() + header.nonce + body, CONTEXT)

    def test_other_dek_fails_on_commitment_before_aes(self, monkeypatch):
        """A DEK that does not match the header's commitment never reaches AES-GCM."""
        header, body = parse_envelope(_seal())
        calls = []
        monkeypatch.setattr(DataKey, "open", lambda *args: calls.append(args))
        with pytest.raises(AeadError):
            open_v1(OTHER, header, body, CONTEXT)
        assert calls == []

    def test_forged_commitment_still_fails(self, open_envelope):
        """Writing the other DEK's commitment into the header does not make it open."""
        header, body = parse_envelope(_seal())
        forged = _prefix(dk=OTHER) + header.nonce + body
        with pytest.raises(AeadError):
            open_envelope(OTHER, forged, CONTEXT)

    def test_open_v1_refuses_stream_header(self):
        """A format 2 header is not opened as format 1."""
        with pytest.raises(EnvelopeFormatError):
            open_v1(DK, parse_header(_V2_HEADER), bytes(16), CONTEXT)

    def test_data_key_lease_seals_an_ordinary_envelope(self, open_envelope):
        """A client holding only the content key and prefix makes envelopes the broker opens."""
        prefix, key = _prefix(), DK.content_key()
        sealed = AESGCM(key).encrypt(NONCE, b"leased", prefix + NONCE + CONTEXT)
        assert open_envelope(DK, prefix + NONCE + sealed, CONTEXT) == b"leased"


_V1_SMALL = {stored: _seal(b"0123456789abcdefX", stored=stored) for stored in (False, True)}


class TestTamperingV1:
    """Any change to a format 1 envelope makes it fail to open."""

    @pytest.mark.parametrize("stored", [False, True], ids=["presented", "stored"])
    def test_every_single_bit_flip_fails(self, open_envelope, stored):
        """Exhaustively: flipping any one bit of header or body fails."""
        envelope = _V1_SMALL[stored]
        for bit in range(len(envelope) * 8):
            tampered = bytearray(envelope)
            tampered[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(FAILURES):
                open_envelope(DK, bytes(tampered), _presented(stored))

    @settings(max_examples=300)
    @given(stored=st.booleans(), size=st.integers(0, 300), data=st.data())
    def test_random_bit_flip_fails(self, open_envelope, stored, size, data):
        """Flipping any bit of an envelope of any size fails."""
        envelope = _seal(bytes(size), stored=stored)
        bit = data.draw(st.integers(0, len(envelope) * 8 - 1))
        tampered = bytearray(envelope)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FAILURES):
            open_envelope(DK, bytes(tampered), _presented(stored))

    @pytest.mark.parametrize("stored", [False, True], ids=["presented", "stored"])
    def test_every_truncation_fails(self, open_envelope, stored):
        """Any strict prefix of an envelope fails."""
        envelope = _V1_SMALL[stored]
        for end in range(len(envelope)):
            with pytest.raises(FAILURES):
                open_envelope(DK, envelope[:end], _presented(stored))

    @settings(max_examples=100)
    @given(stored=st.booleans(), suffix=st.binary(min_size=1, max_size=40))
    def test_appending_bytes_fails(self, open_envelope, stored, suffix):
        """Bytes appended to an envelope make it fail."""
        with pytest.raises(FAILURES):
            open_envelope(DK, _V1_SMALL[stored] + suffix, _presented(stored))


class TestTextForm:
    """to_text / from_text: the base64 form for text columns."""

    @settings(max_examples=100)
    @given(st.binary(min_size=1, max_size=100))
    def test_round_trip(self, envelope):
        """Any envelope survives the text form."""
        assert from_text(to_text(envelope)) == envelope

    def test_is_standard_padded_base64(self):
        """The text form uses the standard alphabet with padding."""
        assert to_text(b"\xfb\xff") == "+/8="

    @pytest.mark.parametrize(
        "text",
        ["", "QQ", "QQ=", "Q Q==", "QQ==\n", "-_8=", "QR==", "QQ==QQ==", "ÀÀÀÀ", "QQ==="],
    )
    def test_rejects_non_canonical_text(self, text):
        """Only the exact output of to_text decodes."""
        with pytest.raises(EnvelopeFormatError):
            from_text(text)
