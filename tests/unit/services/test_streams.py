from __future__ import annotations

import os

import pytest
from unit.services.fakes import CALLER

from broker.core.wire import DEFAULT_SEGMENT_SIZE, TAG_SIZE
from broker.errors import DecryptionFailedError, PermissionDeniedError
from broker.services.envelope import DecryptItem
from broker.services.streams import DecryptStreamSession, EncryptStreamSession

TENANT = {"tenant": "acme"}
PLAINTEXT = os.urandom(2 * DEFAULT_SEGMENT_SIZE + 1000)  # two full segments and a short last one
SEALED_SEGMENT = DEFAULT_SEGMENT_SIZE + TAG_SIZE


async def encrypt_stream(
    envelope, plaintext=PLAINTEXT, context=TENANT, *, store=False, chunk=70_000
):
    """Seal a stream fed in chunks; the whole envelope."""
    encryptor, _, _ = await envelope.open_encrypt_stream(CALLER, "default", context, store=store)
    session = EncryptStreamSession(encryptor)
    parts = [session.header()]
    parts += [session.feed(plaintext[i : i + chunk]) for i in range(0, len(plaintext), chunk)]
    parts.append(session.finish())
    return b"".join(parts)


async def decrypt_stream(envelope, sealed, context=TENANT, chunk=50_000):
    """Open a stream fed in chunks; the plaintext (finish included)."""
    session = DecryptStreamSession(envelope, CALLER, context)
    parts = [await session.feed(sealed[i : i + chunk]) for i in range(0, len(sealed), chunk)]
    return b"".join(parts) + session.finish()


class TestStreamSessions:
    """EncryptStreamSession and DecryptStreamSession: large payloads in chunks of any size."""

    @pytest.mark.parametrize(
        ("enc_chunk", "dec_chunk"), [(70_000, 50_000), (1 << 20, 4096), (4096, 1 << 20)]
    )
    async def test_round_trip_in_any_chunking(self, envelope, enc_chunk, dec_chunk):
        """However the stream is cut on either side, the plaintext comes back whole."""
        sealed = await encrypt_stream(envelope, chunk=enc_chunk)
        assert await decrypt_stream(envelope, sealed, chunk=dec_chunk) == PLAINTEXT

    async def test_header_arriving_a_few_bytes_at_a_time(self, envelope):
        """A header split over many small chunks is buffered until it parses."""
        sealed = await encrypt_stream(envelope)
        session = DecryptStreamSession(envelope, CALLER, TENANT)
        head = b"".join([await session.feed(sealed[i : i + 7]) for i in range(0, 700, 7)])
        assert head + await session.feed(sealed[700:]) + session.finish() == PLAINTEXT

    async def test_empty_stream(self, envelope):
        """A stream with no plaintext round trips."""
        sealed = await encrypt_stream(envelope, b"")
        assert await decrypt_stream(envelope, sealed) == b""

    async def test_stream_envelope_opens_with_unary_decrypt(self, envelope):
        """A stream envelope held in memory decrypts with the ordinary Decrypt."""
        sealed = await encrypt_stream(envelope)
        (opened,) = await envelope.decrypt(CALLER, [DecryptItem(sealed, TENANT)])
        assert opened.plaintext == PLAINTEXT

    async def test_stored_context_need_not_be_presented(self, envelope):
        """A stream that stores its context opens without presenting it."""
        sealed = await encrypt_stream(envelope, store=True)
        assert await decrypt_stream(envelope, sealed, context={}) == PLAINTEXT

    async def test_plaintext_is_released_only_after_authentication(self, envelope):
        """Before finish, only whole segments that authenticated are released; the last waits."""
        sealed = await encrypt_stream(envelope)
        session = DecryptStreamSession(envelope, CALLER, TENANT)
        released = await session.feed(sealed)
        assert released == PLAINTEXT[: 2 * DEFAULT_SEGMENT_SIZE]
        assert released + session.finish() == PLAINTEXT

    async def test_truncated_stream_fails_at_finish(self, envelope):
        """A stream cut at a segment boundary is detected when it ends."""
        sealed = await encrypt_stream(envelope)
        session = DecryptStreamSession(envelope, CALLER, TENANT)
        await session.feed(sealed[: len(sealed) - (1000 + TAG_SIZE)])
        with pytest.raises(DecryptionFailedError):
            session.finish()

    async def test_wrong_context_fails_at_the_header(self, envelope):
        """Another context fails as soon as the header is read, before any plaintext."""
        sealed = await encrypt_stream(envelope)
        session = DecryptStreamSession(envelope, CALLER, {"tenant": "evil"})
        with pytest.raises(DecryptionFailedError):
            await session.feed(sealed)

    async def test_tampered_segment_fails(self, envelope):
        """A flipped byte in a middle segment fails when that segment is reached."""
        sealed = bytearray(await encrypt_stream(envelope))
        sealed[-SEALED_SEGMENT] ^= 1
        with pytest.raises(DecryptionFailedError):
            await decrypt_stream(envelope, bytes(sealed))

    @pytest.mark.parametrize("garbage", [b"\x09" + bytes(100), b"\x01" + bytes(100)])
    async def test_not_a_stream_fails(self, envelope, garbage):
        """Bytes that are no stream envelope (or a format-1 envelope) fail at once."""
        session = DecryptStreamSession(envelope, CALLER, {})
        with pytest.raises(DecryptionFailedError):
            await session.feed(garbage)

    async def test_finish_before_any_header_fails(self, envelope):
        """Ending a stream that never sent a whole header fails."""
        session = DecryptStreamSession(envelope, CALLER, {})
        assert await session.feed(b"\x02") == b""
        with pytest.raises(DecryptionFailedError):
            session.finish()

    async def test_denied_stream_decrypt(self, envelope, fakes):
        """A caller denied decrypt gets PermissionDenied once the header names the key."""
        sealed = await encrypt_stream(envelope)
        fakes.authz.deny(operation="decrypt")
        with pytest.raises(PermissionDeniedError):
            await DecryptStreamSession(envelope, CALLER, TENANT).feed(sealed)
        assert fakes.kms.calls["unwrap"] == 0
