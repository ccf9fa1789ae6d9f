"""Client's signing, RSA, hashing, derivation and token calls against the fakes in conftest.py."""

import hashlib
import re

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

import keybroker_client as kb

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture
def client(ops):
    """A sync client connected to the fake server."""
    with kb.Client(ops.socket) as c:
        yield c


class TestSigning:
    """sign, verify and their batch forms."""

    def test_sign_then_verify(self, client):
        """A signature the broker made verifies and verify returns True."""
        signature = client.sign(b"invoice 42", key="signing")

        assert client.verify(b"invoice 42", signature, key="signing") is True

    def test_bad_signature_raises_verification_error(self, client):
        """A signature over other data raises VerificationError, never returns False."""
        signature = client.sign(b"invoice 42", key="signing")

        with pytest.raises(kb.VerificationError) as caught:
            client.verify(b"invoice 43", signature, key="signing")

        assert caught.value.reason == "VERIFICATION_FAILED"

    def test_wrong_key_purpose_is_key_state_error(self, client):
        """Signing with an envelope key raises KeyStateError (WRONG_KEY_PURPOSE)."""
        with pytest.raises(kb.KeyStateError) as caught:
            client.sign(b"x", key="default")

        assert caught.value.reason == "WRONG_KEY_PURPOSE"

    def test_unknown_key_is_kms_key_not_found(self, client):
        """An unknown key raises KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.sign(b"x", key="missing")

    def test_text_data_is_a_type_error(self, client):
        """Data must be bytes; a str is refused before any call."""
        with pytest.raises(TypeError, match="data must be bytes"):
            client.sign("invoice", key="signing")

    def test_sign_batch_keeps_order_and_item_errors(self, client):
        """A failed item is an exception in its place; the others are signatures."""
        results = client.sign_batch([b"one", b"bad", b"two"], key="signing")

        assert results[0] == client.sign(b"one", key="signing")
        assert isinstance(results[1], kb.InvalidParameterError)
        assert results[2] == client.sign(b"two", key="signing")

    def test_verify_batch_returns_true_or_verification_error(self, client):
        """Each pair verifies to True or comes back as a VerificationError instance."""
        good = client.sign(b"one", key="signing")

        results = client.verify_batch([(b"one", good), (b"two", good)], key="signing")

        assert results[0] is True
        assert isinstance(results[1], kb.VerificationError)

    def test_verify_batch_wants_pairs(self, client):
        """Items that are not (data, signature) pairs are refused with a clear message."""
        with pytest.raises(TypeError, match=r"\(data, signature\) tuples"):
            client.verify_batch([b"one"], key="signing")

    def test_batch_refuses_a_single_bytes_value(self, client):
        """A bare bytes value is not a batch of items."""
        with pytest.raises(TypeError, match="sequence of bytes items"):
            client.sign_batch(b"one", key="signing")


class TestPublicKeyAndRsa:
    """public_key, offline rsa_encrypt and rsa_decrypt in the broker."""

    def test_public_key_is_pem(self, client):
        """public_key returns the PEM bytes."""
        pem = client.public_key("rsa")

        assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")

    def test_rsa_encrypt_fetches_the_key_once_and_encrypts_locally(self, ops):
        """Two encryptions make one GetPublicKey call and no AsymmetricEncrypt call."""
        ops.signing.public_key_calls.clear()
        ops.asymmetric.encrypt_calls.clear()
        with kb.Client(ops.socket) as client:
            first = client.rsa_encrypt(b"card 4111", key="rsa")
            second = client.rsa_encrypt(b"card 4111", key="rsa")

        assert ops.signing.public_key_calls == ["rsa"]
        assert ops.asymmetric.encrypt_calls == []
        assert first != second  # OAEP is randomised
        assert ops.rsa_key.decrypt(first, OAEP) == b"card 4111"

    def test_rsa_round_trip_through_the_broker(self, client):
        """What rsa_encrypt made, rsa_decrypt opens in the broker."""
        ciphertext = client.rsa_encrypt(b"secret", key="rsa")

        assert client.rsa_decrypt(ciphertext, key="rsa") == b"secret"

    def test_tampered_ciphertext_is_a_decryption_error(self, client):
        """A flipped bit fails decryption in the broker."""
        ciphertext = bytearray(client.rsa_encrypt(b"secret", key="rsa"))
        ciphertext[5] ^= 1

        with pytest.raises(kb.DecryptionError):
            client.rsa_decrypt(bytes(ciphertext), key="rsa")

    def test_rsa_decrypt_sends_the_key_version(self, ops, client):
        """key_version defaults to 0 (current) and is passed through when given."""
        ciphertext = client.rsa_encrypt(b"v", key="rsa")

        client.rsa_decrypt(ciphertext, key="rsa")
        client.rsa_decrypt(ciphertext, key="rsa", key_version=3)

        assert ops.asymmetric.decrypt_versions[-2:] == [0, 3]

    def test_negative_key_version_is_refused(self, client):
        """A negative version is refused before any call."""
        with pytest.raises(kb.InvalidParameterError, match="key_version"):
            client.rsa_decrypt(b"x", key="rsa", key_version=-1)

    def test_rotate_key_refetches_the_public_key(self, ops):
        """After rotate_key (even one that failed) the next rsa_encrypt asks for the key again."""
        ops.signing.public_key_calls.clear()
        with kb.Client(ops.socket) as client:
            client.rsa_encrypt(b"a", key="rsa")
            with pytest.raises(kb.UnsupportedOperationError):  # the fakes have no KeyAdmin
                client.rotate_key("rsa")
            client.rsa_encrypt(b"b", key="rsa")

        assert ops.signing.public_key_calls == ["rsa", "rsa"]

    def test_oversize_plaintext_names_the_limit(self, client):
        """More than k - 66 bytes raises InvalidParameterError locally."""
        with pytest.raises(kb.InvalidParameterError, match="at most 190"):
            client.rsa_encrypt(b"a" * 191, key="rsa")

    def test_signing_key_is_refused_by_the_broker(self, ops, client):
        """A signing key is not used offline; the broker's answer (wrong purpose) is raised."""
        ops.asymmetric.encrypt_calls.clear()

        with pytest.raises(kb.KeyStateError):
            client.rsa_encrypt(b"x", key="signing")

        assert ops.asymmetric.encrypt_calls == ["signing"]

    def test_unknown_key(self, client):
        """An unknown key raises KMSKeyNotFoundError from the public-key fetch."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.rsa_encrypt(b"x", key="missing")


class TestPasswords:
    """hash_password and verify_password."""

    def test_hash_then_verify(self, client):
        """A hash verifies with its password, given as str or UTF-8 bytes."""
        stored = client.hash_password("correct horse")

        assert client.verify_password("correct horse", stored) is True
        assert client.verify_password(b"correct horse", stored) is True

    def test_wrong_password_raises_verification_error(self, client):
        """A wrong password raises VerificationError."""
        stored = client.hash_password("correct horse")

        with pytest.raises(kb.VerificationError):
            client.verify_password("battery staple", stored)

    def test_pepper_key_is_sent(self, client):
        """The pepper key name goes with both calls; without it the hash does not verify."""
        stored = client.hash_password("pw", pepper_key="pepper")

        assert client.verify_password("pw", stored, pepper_key="pepper")
        with pytest.raises(kb.VerificationError):
            client.verify_password("pw", stored)

    def test_over_budget_is_resource_exhausted(self, client):
        """RESOURCE_EXHAUSTED from the hashing pool becomes ResourceExhaustedError."""
        with pytest.raises(kb.ResourceExhaustedError):
            client.hash_password("flood")

    def test_non_utf8_bytes_are_refused(self, client):
        """Password bytes must be UTF-8 text, since the wire carries a string."""
        with pytest.raises(kb.InvalidParameterError, match="UTF-8"):
            client.hash_password(b"\xff\xfe")


class TestDigests:
    """digest and verify_digest."""

    def test_digest_is_sha256_hex(self, client):
        """The digest is the lowercase hex SHA-256."""
        assert client.digest(b"abc") == hashlib.sha256(b"abc").hexdigest()

    def test_verify_digest_hex_and_raw(self, client):
        """The expected digest may be hex text or the raw 32 bytes."""
        assert client.verify_digest(b"abc", hashlib.sha256(b"abc").hexdigest()) is True
        assert client.verify_digest(b"abc", hashlib.sha256(b"abc").digest()) is True

    def test_mismatch_raises_verification_error(self, client):
        """Another digest raises VerificationError."""
        with pytest.raises(kb.VerificationError):
            client.verify_digest(b"abc", hashlib.sha256(b"abd").hexdigest())


class TestHmac:
    """hmac, hmac_verify and hmac_batch."""

    def test_hmac_then_verify(self, client):
        """A MAC the broker made verifies."""
        mac = client.hmac(b"amount=100", key="hmac")

        assert len(mac) == 32
        assert client.hmac_verify(b"amount=100", mac, key="hmac") is True

    def test_tampered_mac_raises_verification_error(self, client):
        """A flipped bit in the MAC raises VerificationError."""
        mac = bytearray(client.hmac(b"amount=100", key="hmac"))
        mac[0] ^= 1

        with pytest.raises(kb.VerificationError):
            client.hmac_verify(b"amount=100", bytes(mac), key="hmac")

    def test_wrong_key_purpose(self, client):
        """An envelope key cannot MAC."""
        with pytest.raises(kb.KeyStateError):
            client.hmac(b"x", key="default")

    def test_batch_item_errors_in_place(self, client):
        """hmac_batch returns MACs and exception instances in request order."""
        results = client.hmac_batch([b"a", b"bad", b"b"], key="hmac")

        assert results[0] == client.hmac(b"a", key="hmac")
        assert isinstance(results[1], kb.InvalidParameterError)
        assert results[2] == client.hmac(b"b", key="hmac")


class TestBlindIndex:
    """blind_index and blind_index_batch."""

    def test_fields_are_sent_and_index_is_deterministic(self, ops, client):
        """Key, field, tenant, value and length reach the broker; equal inputs, equal index."""
        first = client.blind_index(b"a@example.com", key="hmac", field="email", tenant="acme")
        second = client.blind_index(b"a@example.com", key="hmac", field="email", tenant="acme")

        sent = ops.hashing.blind_index_requests[-1]
        assert (sent.key, sent.field, sent.tenant, sent.value, sent.length) == (
            "hmac",
            "email",
            "acme",
            b"a@example.com",
            32,
        )
        assert first == second
        assert len(first) == 32

    def test_tenants_get_different_indexes(self, client):
        """The same value indexes differently per tenant."""
        acme = client.blind_index(b"v", key="hmac", field="email", tenant="acme")
        globex = client.blind_index(b"v", key="hmac", field="email", tenant="globex")

        assert acme != globex

    def test_length_is_passed_and_checked_by_the_broker(self, client):
        """length=16 gives 16 bytes; the broker refuses 8."""
        assert len(client.blind_index(b"v", key="hmac", field="f", tenant="t", length=16)) == 16
        with pytest.raises(kb.InvalidParameterError):
            client.blind_index(b"v", key="hmac", field="f", tenant="t", length=8)

    def test_zero_length_is_refused_locally(self, client):
        """Zero would read as "default" on the wire, so the client refuses it."""
        with pytest.raises(kb.InvalidParameterError, match="length must be a positive integer"):
            client.blind_index(b"v", key="hmac", field="f", tenant="t", length=0)

    def test_batch(self, client):
        """blind_index_batch matches single calls, with item errors in place."""
        results = client.blind_index_batch([b"a", b"bad"], key="hmac", field="f", tenant="t")

        assert results[0] == client.blind_index(b"a", key="hmac", field="f", tenant="t")
        assert isinstance(results[1], kb.InvalidParameterError)


class TestDerivation:
    """derive_key (HKDF in the broker) and derive_key_pbkdf2."""

    def test_hkdf_request_carries_every_input(self, ops, client):
        """Key, info, context, salt and length reach the broker as given."""
        derived = client.derive_key(
            key="derive", info=b"purpose", context={"tenant": "acme"}, salt=b"s", length=48
        )

        sent = ops.derivation.requests[-1]
        assert (sent.key, sent.info, dict(sent.context), sent.salt, sent.length) == (
            "derive",
            b"purpose",
            {"tenant": "acme"},
            b"s",
            48,
        )
        assert len(derived) == 48

    def test_hkdf_wrong_key_purpose(self, client):
        """Deriving from an envelope key raises KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            client.derive_key(key="default")

    def test_pbkdf2_defaults(self, ops, client):
        """No salt asks for a fresh one; 600,000 iterations and 32 bytes are sent."""
        key, salt = client.derive_key_pbkdf2("hunter2")

        sent = ops.derivation.requests[-1]
        assert (sent.password, sent.salt, sent.iterations, sent.length) == (
            b"hunter2",
            b"",
            600_000,
            32,
        )
        assert (len(key), salt) == (32, b"\x07" * 32)

    def test_pbkdf2_given_salt_is_returned(self, client):
        """A caller's salt comes back unchanged."""
        _, salt = client.derive_key_pbkdf2(b"pw", salt=b"s" * 16, iterations=1000)

        assert salt == b"s" * 16

    def test_pbkdf2_empty_salt_is_refused(self, client):
        """An empty salt would mean "make one" on the wire; the client refuses it."""
        with pytest.raises(kb.InvalidParameterError, match="pass None"):
            client.derive_key_pbkdf2(b"pw", salt=b"")


class TestTokens:
    """token in its three encodings."""

    def test_urlsafe_is_the_default(self, client):
        """token() returns urlsafe text of 32 bytes."""
        token = client.token()

        assert isinstance(token, str)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)

    def test_hex_and_bytes(self, client):
        """encoding="hex" gives 2n hex characters, "bytes" gives n raw bytes."""
        assert client.token(16, encoding="hex") == bytes(range(16)).hex()
        assert client.token(16, encoding="bytes") == bytes(range(16))

    def test_short_token_is_refused_by_the_broker(self, client):
        """Fewer than 16 bytes raises InvalidParameterError from the broker."""
        with pytest.raises(kb.InvalidParameterError) as caught:
            client.token(8)

        assert caught.value.code is not None  # raised by the daemon, not locally

    def test_unknown_encoding(self, client):
        """An encoding other than urlsafe, hex or bytes is refused before any call."""
        with pytest.raises(kb.InvalidParameterError, match="encoding must be one of"):
            client.token(encoding="base32")
