"""The clients against an in-process gRPC server (the `fake` fixture in conftest.py)."""

import io
import threading

import pytest

import keybroker_client as kb
from keybroker_client._facade import _shared


@pytest.fixture
def client(fake):
    """A sync client connected to the fake server."""
    with kb.Client(fake[0]) as c:
        yield c


class TestClientCalls:
    """Client unary calls: conversion, error mapping and deadlines over a real channel."""

    def test_round_trip_with_context(self, client):
        """What encrypt returns, decrypt opens with the same context."""
        envelope = client.encrypt(b"card", context={"tenant": "acme"})

        assert client.decrypt(envelope, context={"tenant": "acme"}) == b"card"

    def test_reason_metadata_maps_over_a_real_channel(self, client):
        """The reason word in trailing metadata survives the wire and picks the class."""
        envelope = client.encrypt(b"card", context={"tenant": "acme"})

        with pytest.raises(kb.DecryptionError, match="ciphertext could not be decrypted"):
            client.decrypt(envelope, context={"tenant": "other"})

    def test_unknown_key(self, client):
        """NOT_FOUND with KEY_NOT_FOUND becomes KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.encrypt(b"x", key="missing")

    def test_unimplemented_rpc(self, client):
        """An RPC the server lacks becomes UnsupportedOperationError."""
        with pytest.raises(kb.UnsupportedOperationError):
            client.rewrap(b"E:[]")

    def test_default_deadline_is_sent(self, fake, client):
        """Every call carries the client's 10 s deadline unless the call sets its own."""
        client.encrypt(b"x")
        client.encrypt(b"x", timeout=2.0)

        default, own = fake[1].deadlines[-2:]
        assert 8.0 < default <= 10.1  # the server's clock reading may round up slightly
        assert 1.0 < own <= 2.1

    def test_deadline_miss_is_broker_unavailable(self, client):
        """A call that outlives its deadline raises BrokerUnavailableError."""
        with pytest.raises(kb.BrokerUnavailableError, match="did not answer in time"):
            client.encrypt(b"x", key="slow", timeout=0.2)

    def test_batch_returns_item_errors_in_order(self, client):
        """A bad batch item comes back as an exception in its place; the others succeed."""
        good = client.encrypt(b"one")
        results = client.decrypt_batch([good, b"garbage", good])

        assert results[0] == b"one"
        assert isinstance(results[1], kb.DecryptionError)
        assert results[1].reason == "DECRYPTION_FAILED"
        assert results[2] == b"one"

    def test_encrypt_batch_round_trip(self, client):
        """encrypt_batch seals every item under the given key and context."""
        envelopes = client.encrypt_batch([b"a", b"b"], context={"t": "1"})

        assert client.decrypt_batch(envelopes, context={"t": "1"}) == [b"a", b"b"]

    def test_batch_refuses_a_bare_bytes_value(self, client):
        """Passing one bytes value instead of a list is a caller mistake, not 5 items."""
        with pytest.raises(TypeError, match="sequence of bytes"):
            client.encrypt_batch(b"hello")

    def test_text_plaintext_is_refused(self, client):
        """Text must be encoded by the caller; the message names the field."""
        with pytest.raises(TypeError, match="plaintext must be bytes"):
            client.encrypt("text")

    def test_describe_key_converts_to_key_info(self, client):
        """KeyInfo carries readable purpose and state words and UTC creation times."""
        info = client.describe_key("default")

        assert info.name == "default"
        assert info.purpose == "envelope"
        assert info.current_version == 2
        assert [v.state for v in info.versions] == ["disabled", "enabled"]
        assert info.versions[0].created is None
        assert info.versions[1].created.timestamp() == 1_700_000_000
        assert info.rotatable

    def test_lease_comes_back_as_a_data_key_lease(self, client):
        """lease_data_key wraps the response in a DataKeyLease with its limits."""
        with client.lease_data_key(key="default") as lease:
            assert lease.key == "default"
            assert lease.key_version == 7
            assert lease.remaining_messages == 5
            assert lease.encrypt(b"x").startswith(b"\x01\x01\x00")


class TestClientStreams:
    """Client streaming calls: framing, chunking, errors and early exit."""

    def test_first_message_carries_the_parameters(self, fake, client):
        """The stream opens with `start` (key, context), then only chunks follow."""
        out = b"".join(client.encrypt_stream([b"ab", b"cd"], key="default", context={"t": "1"}))

        requests = fake[1].stream_requests[-1]
        assert requests[0].WhichOneof("message") == "start"
        assert requests[0].start.key == "default"
        assert dict(requests[0].start.context) == {"t": "1"}
        assert [r.chunk for r in requests[1:]] == [b"ab", b"cd"]
        assert out == b"<ab><cd>"

    def test_file_source_is_read_in_chunk_size_pieces(self, fake, client):
        """A binary file is sent in chunk_size pieces."""
        out = b"".join(client.decrypt_stream(io.BytesIO(b"abcdefg"), chunk_size=3))

        requests = fake[1].stream_requests[-1]
        assert [r.chunk for r in requests[1:]] == [b"abc", b"def", b"g"]
        assert out == b"ABCDEFG"

    def test_large_iterable_items_are_split(self, fake, client):
        """An iterable item larger than chunk_size is split, so no message is oversized."""
        list(client.encrypt_stream([b"x" * 10], chunk_size=4))

        requests = fake[1].stream_requests[-1]
        assert [len(r.chunk) for r in requests[1:]] == [4, 4, 2]

    def test_empty_source_sends_only_the_start(self, fake, client):
        """A 0-byte payload is a start message and nothing else."""
        assert list(client.encrypt_stream([])) == []
        assert len(fake[1].stream_requests[-1]) == 1

    def test_stream_errors_are_mapped(self, client):
        """A server error mid-stream raises the mapped exception to the reader."""
        with pytest.raises(kb.DecryptionError):
            list(client.decrypt_stream([b"ok", b"bad"]))

    def test_source_errors_surface_as_themselves(self, client):
        """An exception from the caller's source is re-raised, not hidden as CANCELLED."""

        def source():
            yield b"first"
            raise OSError("disk gone")

        with pytest.raises(OSError, match="disk gone"):
            list(client.encrypt_stream(source()))

    def test_bytes_source_is_refused_up_front(self, client):
        """A bare bytes payload raises at the call, with the fix in the message."""
        with pytest.raises(TypeError, match=r"io\.BytesIO"):
            client.encrypt_stream(b"payload")

    def test_bad_arguments_fail_at_the_call_not_at_iteration(self, client):
        """A stream's arguments are checked when the method is called."""
        with pytest.raises(kb.InvalidParameterError, match="timeout"):
            client.decrypt_stream([b"x"], timeout=0)
        with pytest.raises(kb.InvalidParameterError, match="chunk_size"):
            client.encrypt_stream([b"x"], chunk_size=0)

    def test_abandoning_the_iterator_ends_the_call(self, client):
        """Stopping early cancels the RPC instead of leaving it open."""
        stream = client.encrypt_stream(iter([b"a", b"b", b"c"]))
        assert next(stream) == b"<a>"
        stream.close()

        assert client.encrypt(b"still works")


class TestOpenSeedEnvelope:
    """open_seed_envelope: the seed's text goes out as is; plaintext or resealed envelope back."""

    def test_plaintext(self, fake, client):
        """Without reseal_key the plaintext comes back; str text is sent as its ASCII bytes."""
        assert client.open_seed_envelope("eyJ2Ijox", key="payments") == b"plain:eyJ2Ijox"

        request = fake[1].seed_requests[-1]
        assert (request.envelope, request.key, request.reseal_key) == (b"eyJ2Ijox", "payments", "")
        assert dict(request.context) == {}

    def test_reseal(self, fake, client):
        """With reseal_key the broker envelope comes back, and the context went with it."""
        envelope = client.open_seed_envelope(
            b"eyJ2Ijox", key="payments", reseal_key="default", context={"t": "1"}
        )

        assert client.decrypt(envelope, context={"t": "1"}) == b"plain:eyJ2Ijox"
        assert fake[1].seed_requests[-1].reseal_key == "default"

    def test_failure_is_a_decryption_error(self, client):
        """The broker's fixed failure maps to DecryptionError."""
        with pytest.raises(kb.DecryptionError, match="could not be decrypted"):
            client.open_seed_envelope(b"bad", key="payments")

    @pytest.mark.parametrize(
        ("arguments", "error", "match"),
        [
            ({"envelope": "café", "key": "k"}, kb.InvalidParameterError, "base64 text"),
            ({"envelope": 7, "key": "k"}, TypeError, "envelope must be bytes"),
            ({"envelope": b"e", "key": 7}, TypeError, "key must be str"),
            ({"envelope": b"e", "key": "k", "reseal_key": 7}, TypeError, "reseal_key must be str"),
        ],
        ids=["non-ascii", "envelope-type", "key-type", "reseal-key-type"],
    )
    def test_arguments_checked_before_sending(self, fake, client, arguments, error, match):
        """Wrong argument types and non-ASCII text fail here, naming the argument."""
        sent = len(fake[1].seed_requests)

        with pytest.raises(error, match=match):
            client.open_seed_envelope(**arguments)

        assert len(fake[1].seed_requests) == sent


class TestAsyncClientCalls:
    """AsyncClient behaves like Client."""

    async def test_open_seed_envelope(self, fake):
        """The async client opens and reseals seed envelopes like the sync one."""
        async with kb.AsyncClient(fake[0]) as client:
            assert await client.open_seed_envelope("eyJ9", key="payments") == b"plain:eyJ9"
            sealed = await client.open_seed_envelope("eyJ9", key="payments", reseal_key="default")
            assert await client.decrypt(sealed) == b"plain:eyJ9"
            with pytest.raises(kb.DecryptionError):
                await client.open_seed_envelope(b"bad", key="payments")

    async def test_round_trip_and_mapping(self, fake):
        """The async client encrypts, decrypts and maps reason words like the sync one."""
        async with kb.AsyncClient(fake[0]) as client:
            envelope = await client.encrypt(b"card", context={"tenant": "acme"})
            assert await client.decrypt(envelope, context={"tenant": "acme"}) == b"card"
            with pytest.raises(kb.DecryptionError):
                await client.decrypt(envelope, context={"tenant": "other"})

    async def test_streams_accept_async_sources(self, fake):
        """Async streams take async iterables and yield the responses in order."""

        async def source():
            yield b"ab"
            yield b"cd"

        async with kb.AsyncClient(fake[0]) as client:
            out = [c async for c in client.encrypt_stream(source(), chunk_size=1)]

        assert out == [b"<a>", b"<b>", b"<c>", b"<d>"]

    async def test_source_errors_surface_as_themselves(self, fake):
        """An async source's exception is re-raised to the reader."""

        async def source():
            yield b"ab"
            raise OSError("disk gone")

        async with kb.AsyncClient(fake[0]) as client:
            with pytest.raises(OSError, match="disk gone"):
                _ = [c async for c in client.encrypt_stream(source())]

    async def test_batch_and_key_admin(self, fake):
        """Batches and key admin work the same way as in the sync client."""
        async with kb.AsyncClient(fake[0]) as client:
            results = await client.decrypt_batch([b"garbage"])
            info = await client.describe_key("default")

        assert isinstance(results[0], kb.DecryptionError)
        assert info.purpose == "envelope"


class TestFacadeAgainstFakeServer:
    """The module-level encrypt/decrypt functions and their shared client."""

    @pytest.fixture(autouse=True)
    def _fresh_shared_client(self, fake, monkeypatch):
        """Point the facade at the fake server and drop its client around each test."""
        monkeypatch.setenv("KEYBROKER_SOCKET", str(fake[0]))
        _shared.reset()
        yield
        _shared.reset()

    def test_encrypt_returns_base64_text(self):
        """The facade returns standard base64 of the binary envelope."""
        text = kb.encrypt(plaintext=b"card")

        assert isinstance(text, str)
        assert kb.decrypt(encrypted_data=text) == b"card"

    def test_str_plaintext_is_utf8(self):
        """A str plaintext is encoded as UTF-8."""
        text = kb.encrypt(plaintext="café")

        assert kb.decrypt(encrypted_data=text) == "café".encode()

    def test_base64_as_bytes_is_accepted(self):
        """Base64 text read from a bytes column decrypts too."""
        text = kb.encrypt(plaintext=b"card", context={"t": "1"})

        assert kb.decrypt(encrypted_data=text.encode(), context={"t": "1"}) == b"card"

    def test_invalid_base64_is_a_decryption_error(self):
        """Text that is not base64 raises DecryptionError without a call."""
        with pytest.raises(kb.DecryptionError, match="base64"):
            kb.decrypt(encrypted_data="not base64!")

    def test_one_client_is_shared_across_threads(self):
        """Concurrent first calls create a single shared client."""
        seen = []

        def call():
            kb.encrypt(plaintext=b"x")
            seen.append(_shared.get())

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert len(seen) == 8
        assert len({id(c) for c in seen}) == 1
