"""Every row of the ecl_crypto_utility README's algorithm and parameter tables, checked.

Each fact is checked against an independent implementation (pyca, hashlib, argon2-cffi)
or by observing the output. Tables: asymmetric algorithm details (5 rows), Argon2id
parameters (5), when to use which KDF (3), KDF algorithm details (4), token output
format (3), DEK cache tuning (2): 22 rows.
"""

import base64
import hashlib
import re

import argon2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybroker_client.compat import (
    DEKCache,
    asymmetric,
    derive_key_hkdf,
    derive_key_pbkdf2,
    exceptions,
    hashing,
    kdf,
    tokens,
)

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def rsa_pair():
    """An RSA pair from the compat API, as PEM and as pyca keys."""
    private_pem, public_pem = asymmetric.generate_rsa_key_pair()
    return private_pem, public_pem, serialization.load_pem_private_key(private_pem, None)


@pytest.fixture(scope="module")
def ec_pair():
    """An ECDSA pair from the compat API, as PEM and as pyca keys."""
    private_pem, public_pem = asymmetric.generate_ecdsa_key_pair()
    return private_pem, public_pem, serialization.load_pem_private_key(private_pem, None)


class TestAsymmetricAlgorithmDetails:
    """Key size, hash, padding, maximum plaintext, key format: RSA and ECDSA columns."""

    def test_key_size(self, rsa_pair, ec_pair):
        """RSA 4096 bits; ECDSA SECP384R1."""
        assert isinstance(rsa_pair[2], rsa.RSAPrivateKey)
        assert rsa_pair[2].key_size == 4096
        assert isinstance(ec_pair[2].curve, ec.SECP384R1)

    def test_hash(self, rsa_pair, ec_pair):
        """RSA-OAEP with SHA-256 opens under pyca; ECDSA signatures verify with SHA-384."""
        text = asymmetric.rsa_encrypt(b"m", rsa_pair[1])
        signature = base64.b64decode(asymmetric.sign(b"m", ec_pair[0]))

        assert rsa_pair[2].decrypt(base64.b64decode(text), OAEP) == b"m"
        ec_pair[2].public_key().verify(signature, b"m", ec.ECDSA(hashes.SHA384()))

    def test_padding_scheme(self, rsa_pair):
        """OAEP with MGF1-SHA-256: a pyca OAEP ciphertext decrypts, PKCS#1 v1.5 does not."""
        public_key = rsa_pair[2].public_key()
        oaep = base64.b64encode(public_key.encrypt(b"m", OAEP)).decode()
        pkcs1 = base64.b64encode(public_key.encrypt(b"m", padding.PKCS1v15())).decode()

        assert asymmetric.rsa_decrypt(oaep, rsa_pair[0]) == b"m"
        with pytest.raises(exceptions.DecryptionError):
            asymmetric.rsa_decrypt(pkcs1, rsa_pair[0])

    def test_max_plaintext(self, rsa_pair):
        """About 446 bytes: 446 fit, 447 do not; ECDSA only signs."""
        assert asymmetric.rsa_encrypt(b"x" * 446, rsa_pair[1])
        with pytest.raises(exceptions.EncryptionError):
            asymmetric.rsa_encrypt(b"x" * 447, rsa_pair[1])

    def test_key_format(self, rsa_pair, ec_pair):
        """PEM: PKCS#8 private keys, SubjectPublicKeyInfo public keys, for both."""
        for private_pem, public_pem, _ in (rsa_pair, ec_pair):
            assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
            assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")


@pytest.mark.usefixtures("broker")
class TestArgon2Parameters:
    """Algorithm, time cost, memory cost, parallelism, hash length: read from the hash."""

    @pytest.fixture
    def parsed(self, broker):
        """The broker's PHC string for one password, split into its parts."""
        del broker
        phc = hashing.hash_password("pw")
        match = re.fullmatch(r"\$(\w+)\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([^$]+)\$([^$]+)", phc)
        assert match, phc
        return match.groups()

    @pytest.mark.parametrize(
        ("index", "value"),
        [(0, "argon2id"), (2, "3"), (1, "65536"), (3, "4")],
        ids=["algorithm", "time-cost", "memory-cost", "parallelism"],
    )
    def test_parameter(self, parsed, index, value):
        """Each parameter as the table gives it."""
        assert parsed[index] == value

    def test_hash_length(self, parsed):
        """32 bytes of hash; and a hash made by argon2-cffi with these parameters verifies."""
        assert len(base64.b64decode(parsed[5] + "=" * (-len(parsed[5]) % 4))) == 32
        reference = argon2.PasswordHasher(
            time_cost=3, memory_cost=65536, parallelism=4, hash_len=32, type=argon2.Type.ID
        ).hash("seed password")

        assert hashing.verify_password("seed password", hash_string=reference) is True


@pytest.fixture
def broker(seed_daemon_socket, use_broker):
    """The compat layer pointed at the README daemon."""
    use_broker(seed_daemon_socket)


class TestWhenToUseWhich:
    """The three scenarios of the KDF table."""

    def test_diffie_hellman_shared_secret(self):
        """Both sides of an X25519 exchange derive the same key with HKDF."""
        alice, bob = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        shared_a = alice.exchange(bob.public_key())
        shared_b = bob.exchange(alice.public_key())

        assert derive_key_hkdf(shared_a, salt=b"s", info=b"i") == derive_key_hkdf(
            shared_b, salt=b"s", info=b"i"
        )

    def test_several_keys_from_one_master_secret(self):
        """Different info values give unrelated keys."""
        master = b"m" * 32

        assert derive_key_hkdf(master, salt=b"s", info=b"a") != derive_key_hkdf(
            master, salt=b"s", info=b"b"
        )

    def test_passphrase(self):
        """A passphrase is stretched with PBKDF2 and re-derived with the stored salt."""
        key, salt = derive_key_pbkdf2("correct horse", iterations=1000)

        assert derive_key_pbkdf2("correct horse", salt=salt, iterations=1000) == (key, salt)


class TestKdfAlgorithmDetails:
    """Algorithm, default output, default salt, default iterations: HKDF and PBKDF2."""

    def test_algorithm(self):
        """Outputs equal pyca's HKDF-SHA256 and hashlib's PBKDF2-HMAC-SHA256."""
        reference = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"s", info=b"i").derive(b"m")

        assert derive_key_hkdf(b"m", salt=b"s", info=b"i") == reference
        assert derive_key_pbkdf2("pw", salt=b"s", iterations=5)[0] == hashlib.pbkdf2_hmac(
            "sha256", b"pw", b"s", 5
        )

    def test_default_output(self):
        """32 bytes from both."""
        assert len(derive_key_hkdf(b"m")) == len(derive_key_pbkdf2("pw", iterations=1)[0]) == 32

    def test_default_salt(self, monkeypatch):
        """A random 32-byte salt for both when none is given."""
        sizes = []
        real = kdf.os.urandom
        monkeypatch.setattr(kdf.os, "urandom", lambda n: sizes.append(n) or real(n))

        derive_key_hkdf(b"m")
        _, salt = derive_key_pbkdf2("pw", iterations=1)

        assert sizes == [32, 32]
        assert len(salt) == 32

    def test_default_iterations(self):
        """600,000 iterations: the same key hashlib makes with that count."""
        assert derive_key_pbkdf2("pw", salt=b"salt")[0] == hashlib.pbkdf2_hmac(
            "sha256", b"pw", b"salt", 600_000
        )


class TestTokenOutputFormat:
    """length=32: 32 raw bytes, 64 hex characters, about 43 URL-safe characters."""

    @pytest.mark.parametrize(
        ("function", "pattern"),
        [
            (tokens.generate_token_hex, r"[0-9a-f]{64}"),
            (tokens.generate_token_urlsafe, r"[A-Za-z0-9_-]{43}"),
        ],
    )
    def test_text(self, function, pattern):
        """Length and character set as the table gives them."""
        assert re.fullmatch(pattern, function(length=32))

    def test_bytes(self):
        """32 raw bytes."""
        token = tokens.generate_token_bytes(length=32)

        assert isinstance(token, bytes)
        assert len(token) == 32


class TestCacheTuning:
    """max_size (default 100) and ttl_seconds (default 300)."""

    def test_max_size(self):
        """Default 100; a full cache evicts, so a too-small one forgets DEKs."""
        cache = DEKCache()
        for i in range(101):
            cache.put(f"w{i}", b"k")

        assert (cache.max_size, cache.size, cache.get("w0")) == (100, 100, None)

    def test_ttl_seconds(self):
        """Default 300 seconds; after it an entry is gone."""
        now = [0.0]
        cache = DEKCache(clock=lambda: now[0])
        cache.put("w", b"k")
        now[0] = 299.0
        assert cache.get("w") == b"k"

        now[0] = 300.0

        assert (cache.ttl_seconds, cache.get("w")) == (300, None)
