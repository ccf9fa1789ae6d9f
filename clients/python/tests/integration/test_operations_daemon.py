"""Signing, hashing, HMAC, token and PBKDF2 calls against the real dev daemon.

The dev daemon (`python -m broker serve --dev`) serves `default` (envelope), `signing`
(ECDSA P-384) and `hmac` (HMAC-SHA256); RSA and HKDF keys are tested in
test_keys_daemon.py against a daemon started from a config file.
"""

import hashlib
import os
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

import keybroker_client as kb


@pytest.fixture
def client(daemon_socket):
    """A sync client connected to the session's dev daemon."""
    with kb.Client(daemon_socket) as c:
        yield c


def flip_last_bit(value):
    """The value with its last bit inverted: a minimal tampering."""
    return value[:-1] + bytes([value[-1] ^ 1])


class TestSigning:
    """Sign, verify, batches and public keys on the ECDSA P-384 dev key."""

    def test_signature_verifies_in_the_broker(self, client):
        """A fresh signature verifies and verify returns True."""
        signature = client.sign(b"invoice 42", key="signing")

        assert client.verify(b"invoice 42", signature, key="signing") is True

    def test_signature_verifies_with_pyca_outside_the_broker(self, client):
        """The DER signature checks out with the PEM public key and ECDSA-SHA384 in pyca."""
        signature = client.sign(b"invoice 42", key="signing")
        public_key = serialization.load_pem_public_key(client.public_key("signing"))

        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp384r1"
        public_key.verify(signature, b"invoice 42", ec.ECDSA(hashes.SHA384()))
        with pytest.raises(InvalidSignature):
            public_key.verify(signature, b"invoice 43", ec.ECDSA(hashes.SHA384()))

    def test_tampered_signature_is_a_verification_error(self, client):
        """A flipped bit makes verify raise VerificationError (reason VERIFICATION_FAILED)."""
        signature = client.sign(b"invoice 42", key="signing")

        with pytest.raises(kb.VerificationError) as caught:
            client.verify(b"invoice 42", flip_last_bit(signature), key="signing")

        assert caught.value.reason == "VERIFICATION_FAILED"

    def test_other_message_is_a_verification_error(self, client):
        """A valid signature over other data does not verify."""
        signature = client.sign(b"invoice 42", key="signing")

        with pytest.raises(kb.VerificationError):
            client.verify(b"invoice 43", signature, key="signing")

    @pytest.mark.parametrize("key", ["default", "hmac"])
    def test_wrong_key_type_is_key_state_error(self, client, key):
        """Signing with an envelope or HMAC key raises KeyStateError (WRONG_KEY_PURPOSE)."""
        with pytest.raises(kb.KeyStateError) as caught:
            client.sign(b"x", key=key)

        assert caught.value.reason == "WRONG_KEY_PURPOSE"

    def test_verify_with_wrong_key_type(self, client):
        """Verifying with an envelope key is a KeyStateError, not a failed verification."""
        signature = client.sign(b"x", key="signing")

        with pytest.raises(kb.KeyStateError):
            client.verify(b"x", signature, key="default")

    def test_unknown_key_is_kms_key_not_found(self, client):
        """An unknown key raises KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.sign(b"x", key="no-such-key")

    def test_batches(self, client):
        """sign_batch signs in order; verify_batch reports a bad pair in its place."""
        signatures = client.sign_batch([b"one", b"two"], key="signing")

        results = client.verify_batch(
            [(b"one", signatures[0]), (b"two", signatures[0]), (b"two", signatures[1])],
            key="signing",
        )

        assert results[0] is True
        assert isinstance(results[1], kb.VerificationError)
        assert results[2] is True

    def test_public_key_of_an_envelope_key_is_refused(self, client):
        """An envelope key has no public half: KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            client.public_key("default")


class TestPasswords:
    """Argon2id password hashing in the broker."""

    def test_hash_is_argon2id_phc_and_verifies(self, client):
        """The hash is a PHC Argon2id string with the seed's parameters, and it verifies."""
        stored = client.hash_password("correct horse battery staple")

        assert re.match(r"^\$argon2id\$v=19\$m=65536,t=3,p=4\$", stored)
        assert client.verify_password("correct horse battery staple", stored) is True

    def test_broker_hash_verifies_outside_the_broker(self, client):
        """The PHC string is standard Argon2id: pyca verifies it without the broker."""
        stored = client.hash_password("correct horse")

        Argon2id.verify_phc_encoded(b"correct horse", stored)

    def test_hash_made_outside_the_broker_verifies(self, client):
        """A standard PHC string (as the seed stored them) verifies in the broker."""
        kdf = Argon2id(salt=os.urandom(16), length=32, iterations=3, lanes=4, memory_cost=65536)
        stored = kdf.derive_phc_encoded(b"seed-era password")

        assert client.verify_password("seed-era password", stored) is True
        with pytest.raises(kb.VerificationError):
            client.verify_password("other password", stored)

    def test_same_password_gets_a_fresh_salt(self, client):
        """Two hashes of one password differ (the salt is embedded)."""
        assert client.hash_password("pw") != client.hash_password("pw")

    def test_wrong_password_is_a_verification_error(self, client):
        """A wrong password raises VerificationError."""
        stored = client.hash_password("correct horse")

        with pytest.raises(kb.VerificationError):
            client.verify_password("Correct horse", stored)

    def test_tampered_hash_is_refused(self, client):
        """A hash string with a changed digest does not verify."""
        stored = client.hash_password("pw")
        tampered = stored[:-2] + ("AA" if stored[-2:] != "AA" else "BB")

        with pytest.raises(kb.VerificationError):
            client.verify_password("pw", tampered)

    def test_pepper_with_an_hmac_key(self, client):
        """A hash peppered with the HMAC key verifies only with that pepper."""
        stored = client.hash_password("pw", pepper_key="hmac")

        assert client.verify_password("pw", stored, pepper_key="hmac") is True
        with pytest.raises(kb.VerificationError):
            client.verify_password("pw", stored)

    def test_pepper_with_wrong_key_type(self, client):
        """An envelope key cannot pepper: KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            client.hash_password("pw", pepper_key="default")

    def test_pepper_with_unknown_key(self, client):
        """An unknown pepper key raises KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.hash_password("pw", pepper_key="no-such-key")


class TestDigests:
    """SHA-256 in the broker."""

    def test_digest_matches_hashlib(self, client):
        """The digest is the lowercase hex SHA-256."""
        assert client.digest(b"abc") == hashlib.sha256(b"abc").hexdigest()

    def test_verify_digest(self, client):
        """A matching digest verifies; another raises VerificationError."""
        assert client.verify_digest(b"abc", hashlib.sha256(b"abc").hexdigest()) is True
        with pytest.raises(kb.VerificationError):
            client.verify_digest(b"abd", hashlib.sha256(b"abc").hexdigest())


class TestHmac:
    """HMAC-SHA256 and blind indexes on the dev `hmac` key."""

    def test_hmac_then_verify(self, client):
        """A 32-byte MAC that verifies."""
        mac = client.hmac(b"amount=100", key="hmac")

        assert len(mac) == 32
        assert client.hmac_verify(b"amount=100", mac, key="hmac") is True

    def test_tampered_mac_is_a_verification_error(self, client):
        """A flipped bit in the MAC, or other data, raises VerificationError."""
        mac = client.hmac(b"amount=100", key="hmac")

        with pytest.raises(kb.VerificationError):
            client.hmac_verify(b"amount=100", flip_last_bit(mac), key="hmac")
        with pytest.raises(kb.VerificationError):
            client.hmac_verify(b"amount=900", mac, key="hmac")

    @pytest.mark.parametrize("key", ["default", "signing"])
    def test_wrong_key_type(self, client, key):
        """An envelope or signing key cannot MAC: KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            client.hmac(b"x", key=key)

    def test_unknown_key(self, client):
        """An unknown key raises KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.hmac(b"x", key="no-such-key")

    def test_hmac_batch_matches_single_calls(self, client):
        """Batch MACs equal the single-call MACs, in order."""
        results = client.hmac_batch([b"a", b"b"], key="hmac")

        assert results == [client.hmac(b"a", key="hmac"), client.hmac(b"b", key="hmac")]

    def test_blind_index_is_deterministic_per_field_and_tenant(self, client):
        """Same inputs give the same index; another tenant or field gives another."""
        index = client.blind_index(b"a@example.com", key="hmac", field="email", tenant="acme")

        again = client.blind_index(b"a@example.com", key="hmac", field="email", tenant="acme")
        other_tenant = client.blind_index(
            b"a@example.com", key="hmac", field="email", tenant="globex"
        )
        other_field = client.blind_index(b"a@example.com", key="hmac", field="login", tenant="acme")

        assert len(index) == 32
        assert index == again
        assert index not in (other_tenant, other_field)

    def test_blind_index_length(self, client):
        """length=16 gives 16 bytes; 8 is below the minimum."""
        short = client.blind_index(b"v", key="hmac", field="f", tenant="t", length=16)

        assert len(short) == 16
        with pytest.raises(kb.InvalidParameterError):
            client.blind_index(b"v", key="hmac", field="f", tenant="t", length=8)

    def test_blind_index_batch_matches_single_calls(self, client):
        """Bulk indexing gives the same tokens as one call per value."""
        values = [b"a@example.com", b"b@example.com"]

        results = client.blind_index_batch(values, key="hmac", field="email", tenant="acme")

        assert results == [
            client.blind_index(v, key="hmac", field="email", tenant="acme") for v in values
        ]

    def test_blind_index_wrong_key_type(self, client):
        """An envelope key cannot index: KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            client.blind_index(b"v", key="default", field="f", tenant="t")


class TestTokens:
    """Tokens from the broker's CSPRNG."""

    def test_encodings(self, client):
        """Tokens come as urlsafe text (the default), hex or raw bytes."""
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", client.token())
        assert re.fullmatch(r"[0-9a-f]{32}", client.token(16, encoding="hex"))
        raw = client.token(24, encoding="bytes")
        assert isinstance(raw, bytes)
        assert len(raw) == 24

    def test_tokens_differ(self, client):
        """Two tokens are never equal."""
        assert client.token() != client.token()

    def test_under_16_bytes_is_invalid_parameter(self, client):
        """Fewer than 16 bytes raises InvalidParameterError from the daemon."""
        with pytest.raises(kb.InvalidParameterError) as caught:
            client.token(15)

        assert caught.value.code is not None

    def test_oversize_token_is_invalid_parameter(self, client):
        """More than 1024 bytes is refused."""
        with pytest.raises(kb.InvalidParameterError):
            client.token(1025)


class TestPbkdf2:
    """PBKDF2-HMAC-SHA256 in the broker."""

    def test_matches_hashlib(self, client):
        """With a given salt the key equals hashlib's PBKDF2-HMAC-SHA256 at 600,000 rounds."""
        key, salt = client.derive_key_pbkdf2("hunter2", salt=b"s" * 16)

        assert salt == b"s" * 16
        assert key == hashlib.pbkdf2_hmac("sha256", b"hunter2", salt, 600_000, 32)

    def test_fresh_salt_is_returned_and_reproduces_the_key(self, client):
        """Without a salt the broker draws 32 random bytes; they derive the same key again."""
        key, salt = client.derive_key_pbkdf2(b"hunter2", iterations=10_000)

        assert len(salt) == 32
        assert client.derive_key_pbkdf2(b"hunter2", salt=salt, iterations=10_000) == (key, salt)


class TestAsyncClient:
    """The same operations from asyncio against the daemon."""

    async def test_sign_hmac_password_token(self, daemon_socket):
        """Signing, HMAC, password hashing and tokens round-trip through AsyncClient."""
        async with kb.AsyncClient(daemon_socket) as client:
            signature = await client.sign(b"doc", key="signing")
            assert await client.verify(b"doc", signature, key="signing") is True
            with pytest.raises(kb.VerificationError):
                await client.verify(b"doc", flip_last_bit(signature), key="signing")
            mac = await client.hmac(b"m", key="hmac")
            assert await client.hmac_verify(b"m", mac, key="hmac") is True
            stored = await client.hash_password("pw")
            assert await client.verify_password("pw", stored) is True
            assert len(await client.token(16, encoding="bytes")) == 16
            with pytest.raises(kb.KeyStateError):
                await client.sign(b"x", key="default")
