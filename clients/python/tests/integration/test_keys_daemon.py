"""RSA-OAEP, HKDF and the seed-compatible API against a daemon with every key purpose.

The daemon is started from a config file by the `keys_daemon_socket` fixture in conftest.py.
"""

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import keybroker_client as kb
from keybroker_client._facade import _shared
from keybroker_client.compat import asymmetric, exceptions, hashing, kdf, symmetric

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture
def client(keys_daemon_socket):
    """A sync client connected to the config-file daemon."""
    with kb.Client(keys_daemon_socket) as c:
        yield c


@pytest.fixture
def compat(keys_daemon_socket, monkeypatch):
    """Point the compat modules' shared client at the config-file daemon."""
    monkeypatch.setenv("KEYBROKER_SOCKET", str(keys_daemon_socket))
    _shared.reset()
    yield
    _shared.reset()


def flip_bit(value, index):
    """The value with one bit inverted: a minimal tampering."""
    return value[:index] + bytes([value[index] ^ 1]) + value[index + 1 :]


class TestRsa:
    """RSA-OAEP: encryption offline in the client, decryption in the broker."""

    def test_offline_ciphertext_decrypts_in_the_broker(self, client):
        """What the client encrypted locally with the PEM, the broker's private key opens."""
        ciphertext = client.rsa_encrypt(b"card 4111", key="rsa")

        assert client.rsa_decrypt(ciphertext, key="rsa") == b"card 4111"

    def test_public_key_is_rsa_4096(self, client):
        """The PEM is an RSA public key of the seed's 4096 bits."""
        public_key = serialization.load_pem_public_key(client.public_key("rsa"))

        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == 4096

    def test_ciphertext_made_with_pyca_decrypts(self, client):
        """Any OAEP-SHA256 implementation can encrypt for the broker with the PEM."""
        public_key = serialization.load_pem_public_key(client.public_key("rsa"))
        ciphertext = public_key.encrypt(b"from elsewhere", OAEP)

        assert client.rsa_decrypt(ciphertext, key="rsa") == b"from elsewhere"

    def test_largest_plaintext_and_one_more(self, client):
        """446 bytes fit RSA-4096-OAEP-SHA256; 447 raise InvalidParameterError naming 446."""
        assert client.rsa_decrypt(client.rsa_encrypt(b"a" * 446, key="rsa"), key="rsa")
        with pytest.raises(kb.InvalidParameterError, match="at most 446"):
            client.rsa_encrypt(b"a" * 447, key="rsa")

    def test_tampered_ciphertext_is_a_decryption_error(self, client):
        """A flipped bit fails decryption with DecryptionError."""
        ciphertext = client.rsa_encrypt(b"card", key="rsa")

        with pytest.raises(kb.DecryptionError):
            client.rsa_decrypt(flip_bit(ciphertext, 10), key="rsa")

    @pytest.mark.parametrize("key", ["default", "signing", "hmac"])
    def test_encrypt_with_wrong_key_type(self, client, key):
        """Envelope, signing and HMAC keys cannot RSA-encrypt: KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            client.rsa_encrypt(b"x", key=key)

    def test_decrypt_with_wrong_key_type(self, client):
        """A signing key cannot decrypt: KeyStateError."""
        ciphertext = client.rsa_encrypt(b"x", key="rsa")

        with pytest.raises(kb.KeyStateError):
            client.rsa_decrypt(ciphertext, key="signing")

    def test_unknown_key(self, client):
        """An unknown key raises KMSKeyNotFoundError on both sides."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.rsa_encrypt(b"x", key="no-such-key")
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.rsa_decrypt(b"\x00" * 512, key="no-such-key")

    def test_rotation_moves_encryption_and_old_versions_still_decrypt(self, client):
        """After rotate_key new ciphertexts use the new version; older ones need key_version."""
        before = client.describe_key("rsa").current_version
        old = client.rsa_encrypt(b"before", key="rsa")

        client.rotate_key("rsa")
        new = client.rsa_encrypt(b"after", key="rsa")

        assert client.rsa_decrypt(new, key="rsa") == b"after"
        assert client.rsa_decrypt(old, key="rsa", key_version=before) == b"before"
        with pytest.raises(kb.DecryptionError):
            client.rsa_decrypt(old, key="rsa")

    async def test_async_round_trip(self, keys_daemon_socket):
        """rsa_encrypt offline and rsa_decrypt in the broker from AsyncClient."""
        async with kb.AsyncClient(keys_daemon_socket) as client:
            ciphertext = await client.rsa_encrypt(b"async", key="rsa")
            assert await client.rsa_decrypt(ciphertext, key="rsa") == b"async"


class TestHkdf:
    """derive_key from the broker's derivation secret."""

    def test_same_inputs_same_key(self, client):
        """Derivation is deterministic for one key, info, context and salt."""
        first = client.derive_key(key="derive", info=b"db", context={"tenant": "acme"})
        second = client.derive_key(key="derive", info=b"db", context={"tenant": "acme"})

        assert len(first) == 32
        assert first == second

    def test_inputs_separate_keys(self, client):
        """Another context, info or salt gives another key."""
        base = client.derive_key(key="derive", info=b"db", context={"tenant": "acme"})

        others = [
            client.derive_key(key="derive", info=b"db", context={"tenant": "globex"}),
            client.derive_key(key="derive", info=b"cache", context={"tenant": "acme"}),
            client.derive_key(key="derive", info=b"db", context={"tenant": "acme"}, salt=b"s"),
        ]

        assert base not in others

    def test_length(self, client):
        """The length argument selects the output size within 16..64."""
        assert len(client.derive_key(key="derive", length=64)) == 64
        with pytest.raises(kb.InvalidParameterError):
            client.derive_key(key="derive", length=65)

    @pytest.mark.parametrize("key", ["signing", "rsa"])
    def test_wrong_key_type(self, client, key):
        """Asymmetric keys are not derivation secrets: KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            client.derive_key(key=key)

    def test_unknown_key(self, client):
        """An unknown key raises KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            client.derive_key(key="no-such-key")


@pytest.mark.usefixtures("compat")
class TestCompatThroughTheBroker:
    """The seed-compatible functions that call the broker."""

    def test_envelope_round_trip(self):
        """envelope_encrypt returns base64 text that envelope_decrypt opens with the context."""
        text = symmetric.envelope_encrypt(b"card", context={"tenant": "acme"})

        assert base64.b64decode(text, validate=True)[0] == 0x01
        assert symmetric.envelope_decrypt(text, context={"tenant": "acme"}) == b"card"
        with pytest.raises(kb.DecryptionError):
            symmetric.envelope_decrypt(text, context={"tenant": "globex"})

    def test_sign_verify_and_public_key(self):
        """asymmetric.sign/verify_with_key_id and get_public_key on the broker's signing key."""
        signature = asymmetric.sign_with_key_id("invoice", "signing")

        assert asymmetric.verify_with_key_id("invoice", signature, "signing") is True
        assert asymmetric.get_public_key("signing").startswith(b"-----BEGIN PUBLIC KEY-----")
        tampered = flip_bit(signature, len(signature) - 1)
        with pytest.raises(kb.VerificationError):
            asymmetric.verify_with_key_id("invoice", tampered, "signing")

    def test_broker_signature_verifies_with_the_seed_function(self):
        """A broker signature, base64-encoded, verifies with the seed's PEM-based verify."""
        signature = asymmetric.sign_with_key_id(b"invoice", "signing")

        text = base64.b64encode(signature).decode()
        assert asymmetric.verify(b"invoice", text, asymmetric.get_public_key("signing"))

    def test_rsa_round_trip(self):
        """asymmetric.rsa_encrypt/rsa_decrypt_with_key_id on the broker's RSA key."""
        ciphertext = asymmetric.rsa_encrypt_with_key_id("secret", "rsa")

        assert asymmetric.rsa_decrypt_with_key_id(ciphertext, "rsa") == b"secret"

    def test_seed_rsa_encrypt_for_a_broker_key(self):
        """The seed's rsa_encrypt with the broker key's PEM makes what the broker decrypts."""
        text = asymmetric.rsa_encrypt(b"secret", asymmetric.get_public_key("rsa"))

        assert asymmetric.rsa_decrypt_with_key_id(base64.b64decode(text), "rsa") == b"secret"

    def test_wrong_key_type(self):
        """Signing with the RSA decryption key raises KeyStateError."""
        with pytest.raises(kb.KeyStateError):
            asymmetric.sign_with_key_id(b"x", "rsa")

    def test_passwords(self):
        """A wrong password raises the seed's HashingError, also a VerificationError."""
        stored = hashing.hash_password("correct horse")

        assert hashing.verify_password("correct horse", stored) is True
        with pytest.raises(exceptions.HashingError) as caught:
            hashing.verify_password("wrong horse", stored)
        assert isinstance(caught.value, kb.VerificationError)

    def test_hmac_with_key_id(self):
        """The broker's MAC is hex, verifies as hex or raw, and a changed MAC raises."""
        mac = hashing.hmac_sign_with_key_id("amount=100", "hmac")

        assert len(mac) == 64
        assert hashing.hmac_verify_with_key_id("amount=100", mac, "hmac") is True
        assert hashing.hmac_verify_with_key_id("amount=100", bytes.fromhex(mac), "hmac")
        with pytest.raises(kb.VerificationError):
            hashing.hmac_verify_with_key_id("amount=900", mac, "hmac")

    def test_hkdf_with_key_id(self):
        """kdf.derive_key_hkdf_with_key_id derives the same key as Client.derive_key."""
        derived = kdf.derive_key_hkdf_with_key_id("derive", info=b"db", context={"t": "a"})

        with kb.Client() as client:
            assert derived == client.derive_key(key="derive", info=b"db", context={"t": "a"})

    def test_unknown_key(self):
        """An unknown key_id raises KMSKeyNotFoundError."""
        with pytest.raises(kb.KMSKeyNotFoundError):
            hashing.hmac_sign_with_key_id(b"x", "no-such-key")
