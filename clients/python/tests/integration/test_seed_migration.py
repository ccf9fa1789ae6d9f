"""Envelopes ecl_crypto_utility sealed: opened through the compat API, re-sealed by the broker.

The seed envelopes here are made by the tests from the seed README's description alone,
with pyca and json (never with keybroker code): base64 of a JSON object whose
`encrypted_data` is base64(nonce ‖ AES-256-GCM(DEK, plaintext) ‖ tag) and whose
`encrypted_dek` is what the seed backend's `encrypt_key` returned. For `LocalKMSBackend`
that is the symmetric format under the master key; for AWS it is the KMS ciphertext blob.
"""

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import keybroker_client
from keybroker_client.compat import (
    DEKCache,
    EnvelopeEncryptor,
    LocalKMSBackend,
    decrypt,
    exceptions,
    migrate_envelope,
)
from keybroker_client.compat.kms.aws import AWSKMSBackend

MASTER_KEY = bytes.fromhex("7f" * 16 + "a5" * 16)
SEED_ARN = "arn:aws:kms:us-east-1:123456789012:key/abcd-1234"


def aes_gcm_text(key, plaintext):
    """The seed's symmetric format: base64(nonce ‖ ciphertext ‖ tag), no associated data."""
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, None)).decode()


def seed_envelope(plaintext, encrypted_dek, dek, key_id):
    """The seed's envelope around an already wrapped DEK."""
    record = {
        "version": 1,
        "encrypted_dek": encrypted_dek,
        "key_id": key_id,
        "encrypted_data": aes_gcm_text(dek, plaintext),
        "algorithm": "AES-256-GCM",
        "timestamp": "2026-04-08T12:00:00+00:00",
    }
    return base64.b64encode(json.dumps(record).encode()).decode()


def local_seed_envelope(plaintext, key_id="dev-key", master_key=MASTER_KEY):
    """What the seed's EnvelopeEncryptor(LocalKMSBackend(master_key=...)) produced."""
    dek = os.urandom(32)
    return seed_envelope(plaintext, aes_gcm_text(master_key, dek), dek, key_id)


def header_key(envelope):
    """The logical key named in a broker envelope."""
    raw = base64.b64decode(envelope)
    assert raw[0] == 0x01
    return raw[4 : 4 + raw[3]].decode()


@pytest.fixture
def broker(seed_daemon_socket, use_broker):
    """The compat layer pointed at the README daemon."""
    use_broker(seed_daemon_socket)


@pytest.fixture
def client(seed_daemon_socket):
    """A plain keybroker client on the README daemon."""
    with keybroker_client.Client(seed_daemon_socket) as c:
        yield c


@pytest.mark.usefixtures("broker")
class TestLocalMasterKey:
    """Seed envelopes whose DEK the seed's LocalKMSBackend wrapped under a master key."""

    def test_decrypt_with_the_master_key(self):
        """EnvelopeEncryptor with LocalKMSBackend(master_key=...) opens the seed's envelope."""
        encryptor = EnvelopeEncryptor(
            kms_backend=LocalKMSBackend(master_key=MASTER_KEY), key_id="dev-key"
        )

        assert encryptor.decrypt(envelope_data=local_seed_envelope(b"card 4111")) == b"card 4111"

    def test_migrate_to_the_broker_format(self, client):
        """Migrating re-seals in the broker: a broker envelope under the mapped key, same data."""
        encryptor = EnvelopeEncryptor(
            kms_backend=LocalKMSBackend(master_key=MASTER_KEY), key_id="dev-key"
        )

        migrated = encryptor.migrate(local_seed_envelope(b"card 4111"))

        assert header_key(migrated) == "dev"
        assert client.decrypt(base64.b64decode(migrated)) == b"card 4111"
        assert encryptor.decrypt(envelope_data=migrated) == b"card 4111"

    def test_package_functions_from_the_environment(self, seed_daemon_socket, use_broker):
        """With the seed's variables, the package-level decrypt and migrate_envelope work too."""
        use_broker(
            seed_daemon_socket,
            ECL_CRYPTO_KMS_BACKEND="local",
            ECL_CRYPTO_KMS_KEY_ID="dev-key",
            ECL_CRYPTO_LOCAL_MASTER_KEY=MASTER_KEY.hex(),
        )
        old = local_seed_envelope(b"stored before the migration")

        assert decrypt(encrypted_data=old) == b"stored before the migration"
        migrated = migrate_envelope(old)
        assert header_key(migrated) == "dev"
        assert decrypt(encrypted_data=migrated) == b"stored before the migration"

    def test_dek_cache_serves_repeated_opens(self, monkeypatch):
        """A second open of the same envelope takes its DEK from the cache."""
        backend = LocalKMSBackend(master_key=MASTER_KEY)
        cache = DEKCache(max_size=10, ttl_seconds=60)
        encryptor = EnvelopeEncryptor(kms_backend=backend, key_id="dev-key", dek_cache=cache)
        old = local_seed_envelope(b"x")
        encryptor.decrypt(envelope_data=old)

        monkeypatch.setattr(backend, "open_seed_dek", None)  # any unwrap now would fail

        assert encryptor.decrypt(envelope_data=old) == b"x"
        assert cache.size == 1

    def test_other_master_key_is_refused(self):
        """An envelope sealed under another master key does not open."""
        encryptor = EnvelopeEncryptor(
            kms_backend=LocalKMSBackend(master_key=MASTER_KEY), key_id="dev-key"
        )

        with pytest.raises(exceptions.EnvelopeDecryptionError):
            encryptor.decrypt(envelope_data=local_seed_envelope(b"x", master_key=bytes(32)))

    def test_tampered_envelope_is_refused(self):
        """A changed byte of the sealed data fails as EnvelopeError and DecryptionError."""
        record = json.loads(base64.b64decode(local_seed_envelope(b"x")))
        raw = bytearray(base64.b64decode(record["encrypted_data"]))
        raw[12] ^= 1
        record["encrypted_data"] = base64.b64encode(bytes(raw)).decode()
        envelope = base64.b64encode(json.dumps(record).encode()).decode()
        encryptor = EnvelopeEncryptor(
            kms_backend=LocalKMSBackend(master_key=MASTER_KEY), key_id="dev-key"
        )

        with pytest.raises(exceptions.DecryptionError) as caught:
            encryptor.decrypt(envelope_data=envelope)

        assert isinstance(caught.value, exceptions.EnvelopeError)

    def test_key_the_broker_does_not_serve(self):
        """Migrating to a backend key the broker has no key for names what to configure."""
        encryptor = EnvelopeEncryptor(
            kms_backend=LocalKMSBackend(master_key=MASTER_KEY), key_id="legacy"
        )

        with pytest.raises(exceptions.KMSKeyNotFoundError, match='uri = "local://legacy"'):
            encryptor.migrate(local_seed_envelope(b"x", key_id="legacy"))


@pytest.mark.usefixtures("broker")
class TestKmsWrappedDek:
    """Seed envelopes whose DEK AWS KMS wrapped: the broker serves the key but has no call yet."""

    def test_explained(self, seed_aws_kms):
        """The error says the broker serves that KMS key (as `payments`) but cannot open it yet."""
        boto3 = pytest.importorskip("boto3")
        kms = boto3.client(
            "kms",
            region_name="us-east-1",
            endpoint_url=seed_aws_kms,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
        )
        dek = os.urandom(32)
        blob = kms.encrypt(KeyId=SEED_ARN, Plaintext=dek)["CiphertextBlob"]
        old = seed_envelope(b"x", base64.b64encode(blob).decode(), dek, SEED_ARN)
        encryptor = EnvelopeEncryptor(
            kms_backend=AWSKMSBackend(region_name="us-east-1"), key_id=SEED_ARN
        )

        with pytest.raises(exceptions.EnvelopeError, match="serves that key as 'payments'"):
            encryptor.decrypt(envelope_data=old)
