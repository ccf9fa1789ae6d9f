"""The Python client against the real daemon (`python -m broker serve --dev`)."""

import base64
import io

import pytest

import keybroker_client as kb
from keybroker_client._facade import _shared

MIB = 1 << 20
TENANT = {"tenant": "acme"}


def header_key_version(envelope: bytes) -> int:
    """Read the backend key version from a format 1 or 2 header (docs/wire-format.md)."""
    name_length = envelope[3]
    return int.from_bytes(envelope[4 + name_length : 8 + name_length], "big")


@pytest.fixture
def client(daemon_socket):
    """A sync client connected to the session's daemon."""
    with kb.Client(daemon_socket) as c:
        yield c


class TestRoundTrip:
    """Unary envelope operations through Client."""

    def test_encrypt_then_decrypt_with_context(self, client):
        """An envelope opens with the context it was sealed with."""
        envelope = client.encrypt(b"card 4111", context=TENANT)

        assert envelope[0] == 0x01
        assert client.decrypt(envelope, context=TENANT) == b"card 4111"

    def test_context_mismatch_is_a_decryption_error(self, client):
        """Another tenant's context cannot open the envelope."""
        envelope = client.encrypt(b"card 4111", context=TENANT)

        with pytest.raises(kb.DecryptionError) as caught:
            client.decrypt(envelope, context={"tenant": "other"})

        assert caught.value.reason == "DECRYPTION_FAILED"
        assert caught.value.request_id  # to find the daemon's log entry

    def test_stored_context_needs_no_context_to_decrypt(self, client):
        """With store_context the envelope carries its context."""
        envelope = client.encrypt(b"card", context=TENANT, store_context=True)

        assert client.decrypt(envelope) == b"card"

    def test_unknown_key_is_kms_key_not_found(self, client):
        """Naming a key the broker does not serve raises KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.encrypt(b"x", key="no-such-key")

    def test_tampered_envelope_is_a_decryption_error(self, client):
        """Flipping one ciphertext bit makes the envelope fail authentication."""
        envelope = bytearray(client.encrypt(b"card"))
        envelope[-1] ^= 1

        with pytest.raises(kb.DecryptionError):
            client.decrypt(bytes(envelope))

    def test_generate_data_key_returns_key_and_envelope(self, client):
        """The data key is 256 bits and its envelope decrypts to it."""
        data_key, envelope = client.generate_data_key(context=TENANT)

        assert len(data_key) == 32
        assert client.decrypt(envelope, context=TENANT) == data_key

    def test_rewrap_keeps_the_plaintext(self, client):
        """A rewrapped envelope still decrypts to the original plaintext."""
        envelope = client.encrypt(b"card", context=TENANT)

        rewrapped = client.rewrap(envelope, context=TENANT)

        assert client.decrypt(rewrapped, context=TENANT) == b"card"


class TestBatch:
    """Batch calls and per-item errors."""

    def test_one_bad_item_fails_alone(self, client):
        """A bad item becomes an exception in its place; the others decrypt."""
        good = client.encrypt_batch([b"one", b"two"], context=TENANT)

        results = client.decrypt_batch([good[0], b"not an envelope", good[1]], context=TENANT)

        assert results[0] == b"one"
        assert isinstance(results[1], kb.DecryptionError)
        assert results[2] == b"two"


class TestStreams:
    """Streaming encryption of payloads of any size."""

    @pytest.mark.parametrize("size", [0, MIB + 1, 5 * MIB], ids=["0B", "1MiB+1", "5MiB"])
    def test_stream_round_trip(self, client, size):
        """encrypt_stream then decrypt_stream gives back the payload."""
        payload = bytes(i % 251 for i in range(size))

        envelope = b"".join(client.encrypt_stream(io.BytesIO(payload), context=TENANT))
        plaintext = b"".join(client.decrypt_stream(io.BytesIO(envelope), context=TENANT))

        assert envelope[0] == 0x02
        assert plaintext == payload

    def test_truncated_stream_raises(self, client):
        """A cut-off streamed envelope raises DecryptionError, so its output is discarded."""
        envelope = b"".join(client.encrypt_stream([b"x" * (MIB + 1)]))

        with pytest.raises(kb.DecryptionError):
            b"".join(client.decrypt_stream([envelope[:-100]]))


class TestLease:
    """Local sealing with a data-key lease."""

    def test_lease_envelopes_decrypt_through_the_broker(self, client):
        """Envelopes sealed locally open with Client.decrypt and the lease's context."""
        with client.lease_data_key(context=TENANT) as lease:
            envelopes = [lease.encrypt(f"row {i}".encode()) for i in range(3)]

        assert lease.key == "default"
        assert [client.decrypt(e, context=TENANT) for e in envelopes] == [
            b"row 0",
            b"row 1",
            b"row 2",
        ]


class TestKeyAdmin:
    """Describe, list and rotate keys."""

    def test_dev_keys_are_listed(self, client):
        """The dev daemon serves default (envelope), signing and hmac."""
        keys = {k.name: k for k in client.list_keys()}

        assert {"default", "signing", "hmac"} <= set(keys)
        assert keys["default"].purpose == "envelope"
        assert keys["signing"].purpose == "signing"
        assert keys["hmac"].purpose == "hmac"

    def test_rotation_keeps_old_envelopes_and_moves_new_ones(self, client):
        """After rotate_key old envelopes decrypt and new ones carry the new version."""
        before = client.describe_key("default")
        old = client.encrypt(b"before rotation")

        rotated = client.rotate_key("default")
        new = client.encrypt(b"after rotation")

        assert rotated.current_version == before.current_version + 1
        assert client.describe_key("default").current_version == rotated.current_version
        assert header_key_version(old) == before.current_version
        assert header_key_version(new) == rotated.current_version
        assert client.decrypt(old) == b"before rotation"
        assert client.decrypt(new) == b"after rotation"


class TestAsyncClient:
    """The same operations through AsyncClient."""

    async def test_round_trip_batch_stream_and_lease(self, daemon_socket):
        """Unary, batch, stream and lease all work from asyncio."""
        async with kb.AsyncClient(daemon_socket) as client:
            envelope = await client.encrypt(b"card", context=TENANT)
            assert await client.decrypt(envelope, context=TENANT) == b"card"

            results = await client.decrypt_batch([envelope, b"junk"], context=TENANT)
            assert results[0] == b"card"
            assert isinstance(results[1], kb.DecryptionError)

            payload = b"y" * (MIB + 1)
            sealed = b"".join([c async for c in client.encrypt_stream([payload])])
            opened = b"".join([c async for c in client.decrypt_stream([sealed])])
            assert opened == payload

            lease = await client.lease_data_key(context=TENANT)
            assert await client.decrypt(lease.encrypt(b"leased"), context=TENANT) == b"leased"

    async def test_context_mismatch(self, daemon_socket):
        """A wrong context raises DecryptionError from the async client too."""
        async with kb.AsyncClient(daemon_socket) as client:
            envelope = await client.encrypt(b"card", context=TENANT)
            with pytest.raises(kb.DecryptionError):
                await client.decrypt(envelope, context={"tenant": "other"})


class TestFacade:
    """Seed-style module functions configured through KEYBROKER_SOCKET."""

    def test_round_trip_through_base64_text(self, daemon_socket, monkeypatch):
        """keybroker_client.encrypt returns base64 text that keybroker_client.decrypt opens."""
        monkeypatch.setenv("KEYBROKER_SOCKET", str(daemon_socket))
        _shared.reset()
        try:
            text = kb.encrypt(plaintext=b"card 4111")
            assert base64.b64decode(text, validate=True)[0] == 0x01
            assert kb.decrypt(encrypted_data=text) == b"card 4111"
        finally:
            _shared.reset()


class TestDaemonNotRunning:
    """What a user sees when nothing listens on the socket."""

    def test_sync_client_says_what_to_check(self, tmp_path):
        """BrokerUnavailableError names the socket, the daemon and KEYBROKER_SOCKET."""
        socket = tmp_path / "absent.sock"

        with kb.Client(socket) as client, pytest.raises(kb.BrokerUnavailableError) as caught:
            client.encrypt(b"x")

        message = str(caught.value)
        assert str(socket) in message
        assert "running" in message
        assert "KEYBROKER_SOCKET" in message

    async def test_async_client_says_what_to_check(self, tmp_path):
        """The async client reports the same error."""
        async with kb.AsyncClient(tmp_path / "absent.sock") as client:
            with pytest.raises(kb.BrokerUnavailableError, match="KEYBROKER_SOCKET"):
                await client.decrypt(b"x")
