import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

import keybroker_client as kb
from keybroker_client._gen import signing_pb2
from keybroker_client._public_keys import PublicKeyCache, oaep_encrypt

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def pem(private_key):
    """The SubjectPublicKeyInfo PEM the broker returns for a key."""
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def answer(private_key, version=1, algorithm=signing_pb2.SIGNATURE_ALGORITHM_UNSPECIFIED):
    """A GetPublicKey response as the broker would send it."""
    return signing_pb2.GetPublicKeyResponse(
        pem=pem(private_key), key="rsa", key_version=version, algorithm=algorithm
    )


@pytest.fixture(scope="module")
def rsa_key():
    """A 2048-bit RSA key (small enough to generate quickly)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        """Start at zero."""
        self.now = 0.0

    def __call__(self):
        """Return the current reading."""
        return self.now


class TestOaepEncrypt:
    """Offline RSA-OAEP encryption with a broker key's public half."""

    def test_private_key_decrypts_what_the_client_encrypted(self, rsa_key):
        """OAEP with SHA-256 and MGF1-SHA-256, no label: the private half opens it."""
        public_key = PublicKeyCache().put("rsa", answer(rsa_key))

        ciphertext = oaep_encrypt(public_key, b"card 4111")

        assert len(ciphertext) == 256
        assert rsa_key.decrypt(ciphertext, OAEP) == b"card 4111"

    def test_encryption_is_randomised(self, rsa_key):
        """The same plaintext encrypts differently each time."""
        public_key = rsa_key.public_key()

        assert oaep_encrypt(public_key, b"x") != oaep_encrypt(public_key, b"x")

    def test_largest_plaintext_fits(self, rsa_key):
        """The largest plaintext is k - 66 bytes (190 for RSA-2048)."""
        ciphertext = oaep_encrypt(rsa_key.public_key(), b"a" * 190)

        assert rsa_key.decrypt(ciphertext, OAEP) == b"a" * 190

    def test_oversize_plaintext_names_the_limit(self, rsa_key):
        """One byte more raises InvalidParameterError naming the size and the limit."""
        with pytest.raises(kb.InvalidParameterError, match=r"191 bytes.*at most 190") as caught:
            oaep_encrypt(rsa_key.public_key(), b"a" * 191)

        assert caught.value.reason == "INVALID_ARGUMENT"


class TestPublicKeyCache:
    """Which public keys may be used offline, and for how long."""

    def test_cached_key_is_returned_until_the_ttl(self, rsa_key):
        """After put, get returns the key until ttl seconds have passed."""
        clock = FakeClock()
        cache = PublicKeyCache(ttl=60.0, clock=clock)
        cache.put("rsa", answer(rsa_key))

        clock.now = 59.9
        assert cache.get("rsa") is not None
        clock.now = 60.0
        assert cache.get("rsa") is None

    def test_unknown_key_is_a_miss(self):
        """Nothing cached means ask the broker."""
        assert PublicKeyCache().get("rsa") is None

    def test_same_version_reuses_the_parsed_key(self, rsa_key):
        """A refresh that reports the same version keeps the same key object."""
        cache = PublicKeyCache()
        first = cache.put("rsa", answer(rsa_key, version=3))

        assert cache.put("rsa", answer(rsa_key, version=3)) is first

    def test_new_version_replaces_the_current_one(self, rsa_key):
        """After a rotation the new version's key is the one returned."""
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cache = PublicKeyCache()
        cache.put("rsa", answer(rsa_key, version=1))
        cache.put("rsa", answer(other, version=2))

        assert cache.get("rsa").public_numbers() == other.public_key().public_numbers()

    def test_signing_key_is_not_used_offline(self, rsa_key):
        """An RSA-PSS signing key reports its algorithm and is left to the broker."""
        response = answer(rsa_key, algorithm=signing_pb2.SIGNATURE_ALGORITHM_RSA_PSS_3072_SHA256)
        cache = PublicKeyCache()

        assert cache.put("rsa", response) is None
        assert cache.get("rsa") is None

    def test_non_rsa_key_is_not_used_offline(self):
        """An EC public key cannot encrypt with OAEP; the broker decides."""
        ec_key = ec.generate_private_key(ec.SECP384R1())

        assert PublicKeyCache().put("ec", answer(ec_key)) is None

    def test_garbage_pem_is_not_used_offline(self):
        """A PEM that does not parse is left to the broker."""
        response = signing_pb2.GetPublicKeyResponse(pem="not a pem", key="rsa", key_version=1)

        assert PublicKeyCache().put("rsa", response) is None

    def test_forget_drops_one_key(self, rsa_key):
        """forget(key) drops that key's versions and keeps the others."""
        cache = PublicKeyCache()
        cache.put("rsa", answer(rsa_key, version=1))
        cache.put("other", answer(rsa_key, version=1))

        cache.forget("rsa")

        assert cache.get("rsa") is None
        assert cache.get("other") is not None
        assert ("rsa", 1) not in cache._keys

    def test_clear_forgets_everything(self, rsa_key):
        """clear() makes the next call ask the broker."""
        cache = PublicKeyCache()
        cache.put("rsa", answer(rsa_key))

        cache.clear()

        assert cache.get("rsa") is None
