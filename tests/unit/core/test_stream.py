import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.aead import AeadError, DataKey
from broker.core.context import EMPTY_CONTEXT, canonical_context
from broker.core.stream import (
    MAX_SEGMENTS,
    StreamDecryptor,
    StreamEncryptor,
    open_stream,
    seal_stream,
)
from broker.core.wire import (
    FORMAT_STREAM,
    FORMAT_V1,
    EnvelopeFormatError,
    encode_prefix,
    parse_envelope,
    parse_header,
)

DK = DataKey.from_dek(bytes(range(32)))
OTHER = DataKey.from_dek(bytes(range(50, 82)))
CONTEXT = canonical_context({"tenant": "acme"})
OTHER_CONTEXT = canonical_context({"tenant": "evil"})
SALT = bytes(range(16))
S = 4096
FAILURES = (AeadError, EnvelopeFormatError)


def _prefix(*, stored=None, dk=DK, version=FORMAT_STREAM, **swap):
    fields = {"key_name": "default", "key_version": 3, "wrapped_dek": b"wrapped" * 4, **swap}
    return encode_prefix(version=version, commitment=dk.commitment, stored_context=stored, **fields)


def _plaintext(size):
    return bytes(i * 7 % 256 for i in range(size))


def _seal(plaintext, *, stored=False, salt=SALT, **swap):
    prefix = _prefix(stored=CONTEXT if stored else None, **swap)
    return seal_stream(DK, prefix, plaintext, CONTEXT, segment_size=S, salt=salt)


def _presented(stored):
    return EMPTY_CONTEXT if stored else CONTEXT


def _segments(envelope):
    header, body = parse_envelope(envelope)
    sealed = S + 16
    return header.raw, [body[i : i + sealed] for i in range(0, len(body), sealed)]


def _chunked(data, cuts):
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


_SIZES = [0, 1, 15, 16, 17, S - 1, S, S + 1, 3 * S + 100]


class TestStreamRoundTrip:
    """StreamEncryptor / StreamDecryptor and the whole-buffer helpers."""

    @pytest.mark.parametrize("stored", [False, True], ids=["presented", "stored"])
    @pytest.mark.parametrize("size", _SIZES)
    def test_round_trip(self, open_envelope, size, stored):
        """Every size, including segment boundaries, comes back intact."""
        plaintext = _plaintext(size)
        envelope = _seal(plaintext, stored=stored)
        segments = max(1, -(-size // S))
        assert len(envelope) == len(parse_header(envelope).raw) + size + 16 * segments
        assert open_envelope(DK, envelope, _presented(stored)) == plaintext

    def test_empty_stream_is_one_empty_last_segment(self):
        """An empty plaintext still authenticates: one 16-byte segment."""
        _, segments = _segments(_seal(b""))
        assert [len(s) for s in segments] == [16]

    def test_default_segment_size(self, open_envelope):
        """Without a segment size the documented default of 256 KiB is used."""
        envelope = seal_stream(DK, _prefix(), _plaintext(300_000), CONTEXT)
        assert parse_header(envelope).segment_size == 262144
        assert open_envelope(DK, envelope, CONTEXT) == _plaintext(300_000)

    def test_salt_is_random_by_default(self):
        """Two streams of the same plaintext differ."""
        one = seal_stream(DK, _prefix(), b"x", CONTEXT, segment_size=S)
        assert one != seal_stream(DK, _prefix(), b"x", CONTEXT, segment_size=S)

    def test_header_is_format_2_even_from_a_v1_prefix(self):
        """A DEK's format 1 prefix also starts a stream; the header says format 2."""
        encryptor = StreamEncryptor(DK, _prefix(version=FORMAT_V1), CONTEXT, S, SALT)
        assert encryptor.header() == _prefix() + S.to_bytes(4, "big") + SALT
        header = parse_header(encryptor.header())
        assert (header.version, header.segment_size, header.salt) == (FORMAT_STREAM, S, SALT)

    @settings(max_examples=60)
    @given(size=st.integers(0, 3 * S + 50), cuts=st.lists(st.integers(0, 4 * S), max_size=6))
    def test_chunking_does_not_change_the_bytes(self, size, cuts):
        """However plaintext and ciphertext are split into chunks, the results are the same."""
        plaintext = _plaintext(size)
        encryptor = StreamEncryptor(DK, _prefix(), CONTEXT, S, SALT)
        parts = [encryptor.header()]
        parts += [encryptor.update(chunk) for chunk in _chunked(plaintext, cuts)]
        envelope = b"".join(parts) + encryptor.finalize()
        assert envelope == _seal(plaintext)
        header, body = parse_envelope(envelope)
        decryptor = StreamDecryptor(DK, header, CONTEXT)
        out = [decryptor.update(chunk) for chunk in _chunked(body, cuts)]
        assert b"".join(out) + decryptor.finalize() == plaintext

    def test_encryptor_holds_back_a_possible_last_segment(self):
        """A full segment is only released once more plaintext shows it is not the last."""
        encryptor = StreamEncryptor(DK, _prefix(), CONTEXT, S, SALT)
        assert encryptor.update(bytes(S)) == b""
        assert len(encryptor.update(b"x")) == S + 16
        assert len(encryptor.finalize()) == 1 + 16

    def test_encryptor_buffer_is_bounded_by_one_segment(self):
        """A large chunk is sealed as it goes; at most one segment stays buffered."""
        encryptor = StreamEncryptor(DK, _prefix(), CONTEXT, S, SALT)
        out = encryptor.update(bytes(10 * S + 5))
        assert len(out) == 10 * (S + 16)
        assert len(encryptor._buffer) <= S

    def test_decryptor_releases_a_segment_once_more_input_arrives(self):
        """Plaintext is released per authenticated segment, never from an unchecked one."""
        header, body = parse_envelope(_seal(_plaintext(2 * S)))
        decryptor = StreamDecryptor(DK, header, CONTEXT)
        assert decryptor.update(body[: S + 16]) == b""
        assert decryptor.update(body[S + 16 : S + 17]) == _plaintext(S)
        assert decryptor.update(body[S + 17 :]) == b""
        assert decryptor.finalize() == _plaintext(2 * S)[S:]
        assert len(decryptor._buffer) == 0

    def test_decryptor_buffer_is_bounded(self):
        """However much arrives at once, at most one sealed segment stays buffered."""
        header, body = parse_envelope(_seal(_plaintext(10 * S)))
        decryptor = StreamDecryptor(DK, header, CONTEXT)
        assert len(decryptor.update(body)) == 9 * S
        assert len(decryptor._buffer) <= S + 16

    def test_finalize_only_once(self):
        """A finished stream refuses more input."""
        encryptor = StreamEncryptor(DK, _prefix(), CONTEXT, S, SALT)
        encryptor.finalize()
        with pytest.raises(RuntimeError, match="already finalized"):
            encryptor.finalize()
        with pytest.raises(RuntimeError, match="already finalized"):
            encryptor.update(b"x")
        header, body = parse_envelope(_seal(b"x"))
        decryptor = StreamDecryptor(DK, header, CONTEXT)
        decryptor.update(body)
        decryptor.finalize()
        with pytest.raises(RuntimeError, match="already finalized"):
            decryptor.finalize()

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ({"segment_size": 4095}, "segment size must be 4096..4194304"),
            ({"segment_size": 4194305}, "segment size must be 4096..4194304"),
            ({"salt": bytes(15)}, "stream salt must be 16 bytes"),
            ({"prefix": b""}, "not a header prefix"),
            ({"prefix": b"\x03" + _prefix()[1:]}, "not a header prefix"),
            ({"prefix": _prefix() + b"extra"}, "not a header prefix|segment size"),
            ({"prefix": _prefix(dk=OTHER)}, "not made from this data key"),
        ],
    )
    def test_encryptor_rejects_bad_arguments(self, args, message):
        """Mistakes that would produce unopenable streams are refused up front."""
        arguments = {"prefix": _prefix(), "segment_size": S, "salt": SALT, **args}
        with pytest.raises(ValueError, match=message):
            StreamEncryptor(
                DK, arguments["prefix"], CONTEXT, arguments["segment_size"], arguments["salt"]
            )

    def test_encryptor_refuses_more_than_2_32_segments(self):
        """Segment indexes never wrap around and repeat a nonce."""
        encryptor = StreamEncryptor(DK, _prefix(), CONTEXT, S, SALT)
        encryptor._index = MAX_SEGMENTS
        with pytest.raises(ValueError, match="at most 4294967296 segments"):
            encryptor.finalize()

    def test_decryptor_refuses_more_than_2_32_segments(self):
        """A reader stops at the segment limit rather than reuse an index."""
        header, body = parse_envelope(_seal(b"x"))
        decryptor = StreamDecryptor(DK, header, CONTEXT)
        decryptor._index = MAX_SEGMENTS
        decryptor.update(body)
        with pytest.raises(AeadError):
            decryptor.finalize()


_MULTI = {stored: _seal(_plaintext(2 * S + 300), stored=stored) for stored in (False, True)}
_EMPTY = {stored: _seal(b"", stored=stored) for stored in (False, True)}


def _join(header, segments):
    return header + b"".join(segments)


class TestStreamTampering:
    """Any change to a format 2 envelope makes it fail to open."""

    @pytest.mark.parametrize("stored", [False, True], ids=["presented", "stored"])
    def test_every_single_bit_flip_of_an_empty_stream_fails(self, open_envelope, stored):
        """Exhaustively: flipping any one bit of a small stream fails."""
        envelope = _EMPTY[stored]
        for bit in range(len(envelope) * 8):
            tampered = bytearray(envelope)
            tampered[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(FAILURES):
                open_envelope(DK, bytes(tampered), _presented(stored))

    @settings(max_examples=300)
    @given(stored=st.booleans(), data=st.data())
    def test_random_bit_flip_fails(self, open_envelope, stored, data):
        """Flipping any bit of a multi-segment stream, header or body, fails."""
        envelope = _MULTI[stored]
        bit = data.draw(st.integers(0, len(envelope) * 8 - 1))
        tampered = bytearray(envelope)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FAILURES):
            open_envelope(DK, bytes(tampered), _presented(stored))

    @settings(max_examples=200)
    @given(stored=st.booleans(), data=st.data())
    def test_any_truncation_fails(self, open_envelope, stored, data):
        """Cutting a stream anywhere fails."""
        envelope = _MULTI[stored]
        end = data.draw(st.integers(0, len(envelope) - 1))
        with pytest.raises(FAILURES):
            open_envelope(DK, envelope[:end], _presented(stored))

    @settings(max_examples=100)
    @given(suffix=st.binary(min_size=1, max_size=40))
    def test_appending_bytes_fails(self, open_envelope, suffix):
        """Bytes appended after the last segment fail."""
        with pytest.raises(FAILURES):
            open_envelope(DK, _MULTI[False] + suffix, CONTEXT)

    @pytest.mark.parametrize(
        "rearrange",
        [
            lambda s: s[:-1],
            lambda s: s[:-2],
            lambda s: [s[0], s[2]],
            lambda s: [s[1], s[0], s[2]],
            lambda s: [s[0], s[0], s[1], s[2]],
            lambda s: [*s, s[-1]],
            lambda s: [*s, _segments(_EMPTY[False])[1][0]],
        ],
        ids=[
            "drop-last",
            "cut-at-boundary",
            "drop-middle",
            "reorder",
            "duplicate",
            "repeat-last",
            "append-empty-last",
        ],
    )
    def test_segment_level_changes_fail(self, open_envelope, rearrange):
        """Dropping, reordering, duplicating or appending whole segments fails."""
        header, segments = _segments(_MULTI[False])
        assert len(segments) == 3
        with pytest.raises(AeadError):
            open_envelope(DK, _join(header, rearrange(segments)), CONTEXT)

    def test_segments_from_another_stream_fail(self, open_envelope):
        """A segment cannot be moved between streams of the same DEK."""
        header, segments = _segments(_MULTI[False])
        _, others = _segments(_seal(_plaintext(2 * S + 300), salt=bytes(16)))
        with pytest.raises(AeadError):
            open_envelope(DK, _join(header, [segments[0], others[1], segments[2]]), CONTEXT)

    @pytest.mark.parametrize(
        "swap",
        [{"key_name": "payments"}, {"key_version": 4}, {"wrapped_dek": b"wrapped" * 5}],
        ids=["key-name", "key-version", "wrapped-dek"],
    )
    def test_swapping_a_header_field_fails(self, open_envelope, swap):
        """Every header field is authenticated."""
        _, segments = _segments(_MULTI[False])
        forged = _prefix(**swap) + S.to_bytes(4, "big") + SALT
        with pytest.raises(AeadError):
            open_envelope(DK, _join(forged, segments), CONTEXT)

    def test_wrong_context_fails(self, open_envelope):
        """A stream sealed for one tenant does not open for another."""
        with pytest.raises(AeadError):
            open_envelope(DK, _MULTI[False], OTHER_CONTEXT)

    def test_stored_context_with_mismatching_presented_fails(self, open_envelope):
        """A stored-context stream refuses a different presented context."""
        with pytest.raises(EnvelopeFormatError):
            open_envelope(DK, _MULTI[True], OTHER_CONTEXT)

    def test_other_dek_fails_at_construction(self):
        """The commitment is checked before any segment is read."""
        header, _ = parse_envelope(_MULTI[False])
        with pytest.raises(AeadError):
            StreamDecryptor(OTHER, header, CONTEXT)

    def test_v1_header_is_not_a_stream(self):
        """A format 1 header cannot be opened as a stream."""
        prefix = _prefix(version=FORMAT_V1)
        header = parse_header(prefix + bytes(12))
        with pytest.raises(EnvelopeFormatError):
            open_stream(DK, header, bytes(16), CONTEXT)

    def test_failed_stream_stays_failed(self):
        """After a failure the decryptor refuses everything, so no later plaintext escapes."""
        header, body = parse_envelope(_MULTI[False])
        decryptor = StreamDecryptor(DK, header, OTHER_CONTEXT)
        with pytest.raises(AeadError):
            decryptor.update(body)
        with pytest.raises(AeadError):
            decryptor.update(b"")
        with pytest.raises(AeadError):
            decryptor.finalize()

    def test_stream_without_segments_fails(self):
        """A header with no segment after it does not open as an empty plaintext."""
        header, _ = parse_envelope(_EMPTY[False])
        decryptor = StreamDecryptor(DK, header, CONTEXT)
        with pytest.raises(AeadError):
            decryptor.finalize()
