import struct
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keybroker_client import DataKeyLease, KeyStateError
from keybroker_client._gen.envelope_pb2 import LeaseDataKeyResponse

KEY = bytes(range(32))
NOW = datetime(2030, 1, 1, tzinfo=UTC)
EXPIRES = NOW + timedelta(minutes=5)


def header_prefix(name=b"default", version=3, wrapped=b"w" * 60):
    """A format 1 header without its nonce, laid out as docs/wire-format.md says."""
    return (
        bytes([0x01, 0x01, 0x00, len(name)])
        + name
        + struct.pack(">I", version)
        + struct.pack(">H", len(wrapped))
        + wrapped
        + b"c" * 32  # key commitment
    )


# Canonical context {"tenant": "acme"}: pair count, then length-prefixed key and value.
CONTEXT = b"\x00\x01" + b"\x00\x06tenant" + b"\x00\x04acme"


def make_response(*, max_messages=10, max_bytes=1000, expires=EXPIRES, key=KEY):
    """A LeaseDataKeyResponse built by hand with a known key and limits."""
    response = LeaseDataKeyResponse(
        data_key=key,
        header_prefix=header_prefix(),
        aad_suffix=CONTEXT,
        key="default",
        key_version=3,
        max_messages=max_messages,
        max_bytes=max_bytes,
    )
    response.expire_time.FromDatetime(expires)
    return response


class Clock:
    """A settable clock, so expiry is tested without sleeping."""

    def __init__(self, now=NOW):
        """Start at a fixed instant."""
        self.now = now

    def __call__(self):
        """Return the current fake time."""
        return self.now


def counter_nonces():
    """A deterministic nonce source: 1, 2, 3, ... as big-endian bytes."""
    counter = iter(range(1, 1 << 30))
    return lambda n: next(counter).to_bytes(n, "big")


class TestDataKeyLease:
    """Local sealing, limits and key disposal of a data-key lease."""

    def test_envelope_is_prefix_nonce_ciphertext(self):
        """The envelope is header_prefix ‖ nonce ‖ AES-GCM output, per the wire format."""
        nonce = bytes.fromhex("00112233445566778899aabb")
        lease = DataKeyLease(make_response(), clock=Clock(), random_bytes=lambda _: nonce)

        envelope = lease.encrypt(b"card 4111")

        prefix = header_prefix()
        assert envelope[: len(prefix)] == prefix
        assert envelope[len(prefix) : len(prefix) + 12] == nonce
        assert len(envelope) == len(prefix) + 12 + len(b"card 4111") + 16

    def test_documented_aad_opens_the_envelope(self):
        """AES-GCM with aad = header_prefix ‖ nonce ‖ aad_suffix opens what the lease sealed."""
        lease = DataKeyLease(make_response(), clock=Clock())
        envelope = lease.encrypt(b"card 4111")

        prefix = header_prefix()
        nonce = envelope[len(prefix) : len(prefix) + 12]
        body = envelope[len(prefix) + 12 :]
        plaintext = AESGCM(KEY).decrypt(nonce, body, prefix + nonce + CONTEXT)

        assert plaintext == b"card 4111"

    def test_other_context_does_not_open_the_envelope(self):
        """The context is bound: the same envelope fails under a different aad_suffix."""
        lease = DataKeyLease(make_response(), clock=Clock())
        envelope = lease.encrypt(b"card 4111")

        prefix = header_prefix()
        nonce = envelope[len(prefix) : len(prefix) + 12]
        with pytest.raises(InvalidTag):
            AESGCM(KEY).decrypt(nonce, envelope[len(prefix) + 12 :], prefix + nonce + b"\x00\x00")

    def test_every_envelope_gets_a_fresh_nonce(self):
        """Two envelopes of the same plaintext differ, because nonces are random."""
        lease = DataKeyLease(make_response(), clock=Clock())

        assert lease.encrypt(b"same") != lease.encrypt(b"same")

    def test_exhausted_by_message_count(self):
        """After max_messages envelopes the lease refuses with the documented message."""
        lease = DataKeyLease(make_response(max_messages=2), clock=Clock())
        lease.encrypt(b"a")
        lease.encrypt(b"b")

        with pytest.raises(KeyStateError) as caught:
            lease.encrypt(b"c")

        assert str(caught.value) == "data-key lease exhausted; request a new lease"
        assert lease.remaining_messages == 0

    def test_exhausted_by_bytes(self):
        """Plaintext bytes count against max_bytes; the limit itself is still allowed."""
        lease = DataKeyLease(make_response(max_bytes=10), clock=Clock())
        lease.encrypt(b"x" * 6)
        lease.encrypt(b"x" * 4)

        with pytest.raises(KeyStateError, match="exhausted"):
            lease.encrypt(b"x")

    def test_refused_message_does_not_use_up_the_lease(self):
        """A plaintext over the remaining bytes is refused without consuming the lease."""
        lease = DataKeyLease(make_response(max_bytes=10), clock=Clock())

        with pytest.raises(KeyStateError):
            lease.encrypt(b"x" * 11)

        assert lease.remaining_messages == 10
        assert lease.remaining_bytes == 10
        lease.encrypt(b"x" * 10)

    def test_exhausted_at_expiry(self):
        """At expire_time the lease stops sealing, judged by the injected clock."""
        clock = Clock()
        lease = DataKeyLease(make_response(), clock=clock)
        lease.encrypt(b"before")

        clock.now = EXPIRES
        with pytest.raises(KeyStateError, match="exhausted"):
            lease.encrypt(b"after")

    def test_zero_limits_allow_nothing(self):
        """Limits the broker left unset fail closed instead of meaning unlimited."""
        lease = DataKeyLease(make_response(max_messages=0), clock=Clock())

        with pytest.raises(KeyStateError, match="exhausted"):
            lease.encrypt(b"a")

    def test_properties_describe_the_lease(self):
        """key, key_version, expires_at and remaining_messages come from the response."""
        lease = DataKeyLease(make_response(max_messages=5), clock=Clock())
        lease.encrypt(b"a")

        assert lease.key == "default"
        assert lease.key_version == 3
        assert lease.expires_at == EXPIRES
        assert lease.remaining_messages == 4

    def test_close_drops_the_key(self):
        """After close the key bytes are zeroed and sealing is refused."""
        lease = DataKeyLease(make_response(), clock=Clock())
        lease.close()

        assert lease._key == bytearray(32)
        assert lease.closed
        with pytest.raises(KeyStateError, match="closed"):
            lease.encrypt(b"a")

    def test_with_block_closes_the_lease(self):
        """Leaving a with block drops the key."""
        with DataKeyLease(make_response(), clock=Clock()) as lease:
            lease.encrypt(b"a")

        assert lease.closed

    def test_repr_never_shows_the_key(self):
        """The key does not leak through repr (logs, tracebacks)."""
        lease = DataKeyLease(make_response(), clock=Clock())

        assert KEY.hex() not in repr(lease)
        assert repr(KEY) not in repr(lease)

    def test_rejects_a_response_without_a_full_key(self):
        """A response whose key is not 256 bits is refused up front."""
        with pytest.raises(KeyStateError):
            DataKeyLease(make_response(key=b"short"))

    def test_rejects_text_plaintext(self):
        """Text must be encoded by the caller; the lease seals bytes only."""
        lease = DataKeyLease(make_response(), clock=Clock())

        with pytest.raises(TypeError, match="plaintext must be bytes"):
            lease.encrypt("text")  # type: ignore[arg-type]

    def test_nonces_come_from_the_injected_source(self):
        """Randomness is injectable, so envelope bytes are reproducible in tests."""
        one = DataKeyLease(make_response(), clock=Clock(), random_bytes=counter_nonces())
        two = DataKeyLease(make_response(), clock=Clock(), random_bytes=counter_nonces())

        assert one.encrypt(b"a") == two.encrypt(b"a")
