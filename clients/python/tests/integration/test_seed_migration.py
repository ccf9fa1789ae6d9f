"""Envelopes ecl_crypto_utility sealed: opened through the compat API, re-sealed by the broker.

The seed envelopes here are made by the tests from the seed README's description alone,
with pyca and json (never with keybroker code): base64 of a JSON object whose
`encrypted_data` is base64(nonce ‖ AES-256-GCM(DEK, plaintext) ‖ tag) and whose
`encrypted_dek` is what the seed backend's `encrypt_key` returned. For `LocalKMSBackend`
that is the symmetric format under the master key; for AWS base64 of the KMS ciphertext blob
(boto3 Encrypt against moto_server, no context); for Vault base64 of the transit ciphertext
text `vault:v1:...` (transit encrypt against OpenBao, no context); for Cloud KMS base64 of
the ciphertext (google-cloud-kms Encrypt against the in-test server, no AAD).
"""

import base64
import json
import os

import grpc
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)

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
from keybroker_client.compat.kms.gcp import GCPKMSBackend
from keybroker_client.compat.kms.vault import VaultKMSBackend

MASTER_KEY = bytes.fromhex("7f" * 16 + "a5" * 16)
FIXED = "ciphertext could not be decrypted"
GCP_SEED_KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/legacy"


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


def aws_seed_envelope(kms, plaintext, arn=None):
    """What the seed's EnvelopeEncryptor(AWSKMSBackend()) stored: KMS Encrypt, no context."""
    arn = arn or kms.aws_arn
    dek = os.urandom(32)
    blob = kms.moto.client().encrypt(KeyId=arn, Plaintext=dek)["CiphertextBlob"]
    return seed_envelope(plaintext, base64.b64encode(blob).decode(), dek, arn)


def vault_seed_envelope(kms, plaintext):
    """What the seed's EnvelopeEncryptor(VaultKMSBackend()) stored: the transit text, base64."""
    dek = os.urandom(32)
    ciphertext = kms.bao.encrypt(kms.vault_key, dek)
    assert ciphertext.startswith("vault:v1:")
    return seed_envelope(plaintext, base64.b64encode(ciphertext.encode()).decode(), dek, "legacy")


def gcp_seed_envelope(kms, plaintext):
    """What the seed's EnvelopeEncryptor(GCPKMSBackend(...)) stored: Cloud KMS Encrypt, no AAD."""
    dek = os.urandom(32)
    channel = grpc.insecure_channel(kms.gcp.endpoint)
    client = kms_v1.KeyManagementServiceClient(
        transport=KeyManagementServiceGrpcTransport(channel=channel)
    )
    try:
        ciphertext = client.encrypt(request={"name": GCP_SEED_KEY, "plaintext": dek}).ciphertext
    finally:
        channel.close()
    return seed_envelope(plaintext, base64.b64encode(ciphertext).decode(), dek, "legacy")


@pytest.fixture
def kms(kms_seed_daemon, use_broker):
    """The compat layer pointed at the daemon over moto_server and OpenBao, as the migrator."""
    use_broker(kms_seed_daemon.socket)
    return kms_seed_daemon


@pytest.fixture
def migrator(kms_seed_daemon):
    """A plain keybroker client allowed everything."""
    with keybroker_client.Client(kms_seed_daemon.socket) as c:
        yield c


class TestKmsWrappedDek:
    """Seed envelopes whose DEK AWS KMS or Vault transit wrapped: the broker opens them."""

    def test_aws_decrypt_and_migrate(self, kms, migrator):
        """The AWS key's broker key opens the envelope; migrate re-seals it under that key."""
        old = aws_seed_envelope(kms, b"card 4111")
        encryptor = EnvelopeEncryptor(
            kms_backend=AWSKMSBackend(region_name="us-east-1"), key_id=kms.aws_arn
        )

        assert encryptor.decrypt(envelope_data=old) == b"card 4111"
        migrated = encryptor.migrate(old)
        assert header_key(migrated) == "legacy-aws"
        assert migrator.decrypt(base64.b64decode(migrated)) == b"card 4111"

    def test_vault_migrate_to_another_key(self, kms, migrator):
        """A Vault transit envelope opens and moves to the broker key named by key=."""
        old = vault_seed_envelope(kms, b"ssn 078-05-1120")
        encryptor = EnvelopeEncryptor(
            kms_backend=VaultKMSBackend(vault_url=kms.bao.url, token="dropped"),  # noqa: S106 - a fake
            key_id="legacy",
        )

        assert encryptor.decrypt(envelope_data=old) == b"ssn 078-05-1120"
        migrated = encryptor.migrate(old, key="records")
        assert header_key(migrated) == "records"
        assert migrator.decrypt(base64.b64decode(migrated)) == b"ssn 078-05-1120"

    def test_gcp_decrypt_and_migrate(self, kms, migrator):
        """A Cloud KMS envelope opens with the key ring's crypto key and migrates under it."""
        old = gcp_seed_envelope(kms, b"iban DE89")
        backend = GCPKMSBackend(project_id="p", location_id="global", key_ring_id="r")
        encryptor = EnvelopeEncryptor(kms_backend=backend, key_id="legacy")

        assert encryptor.decrypt(envelope_data=old) == b"iban DE89"
        migrated = encryptor.migrate(old)
        assert header_key(migrated) == "legacy-gcp"
        assert migrator.decrypt(base64.b64decode(migrated)) == b"iban DE89"

    def test_package_functions_from_the_environment(self, kms_seed_daemon, use_broker):
        """With the seed's AWS variables, package-level decrypt and migrate_envelope work."""
        use_broker(
            kms_seed_daemon.socket,
            ECL_CRYPTO_KMS_BACKEND="aws",
            ECL_CRYPTO_KMS_KEY_ID=kms_seed_daemon.aws_arn,
            ECL_CRYPTO_AWS_REGION="us-east-1",
        )
        old = aws_seed_envelope(kms_seed_daemon, b"stored before the migration")

        assert decrypt(encrypted_data=old) == b"stored before the migration"
        migrated = migrate_envelope(old)
        assert header_key(migrated) == "legacy-aws"
        assert decrypt(encrypted_data=migrated) == b"stored before the migration"

    def test_reseal_under_a_context(self, kms_seed_daemon, migrator):
        """Client.open_seed_envelope reseals under a context, which Decrypt then requires."""
        old = aws_seed_envelope(kms_seed_daemon, b"x")

        sealed = migrator.open_seed_envelope(
            old, key="legacy-aws", reseal_key="records", context={"tenant": "a"}
        )

        assert migrator.decrypt(sealed, context={"tenant": "a"}) == b"x"
        with pytest.raises(keybroker_client.DecryptionError, match=FIXED):
            migrator.decrypt(sealed)

    def test_one_audit_record_per_call(self, kms_seed_daemon, migrator):
        """Like Decrypt: one `op` record (decrypt on the opening key) and one `rpc` record."""
        old = aws_seed_envelope(kms_seed_daemon, b"x")
        migrator.open_seed_envelope(old, key="legacy-aws", reseal_key="records")

        log = kms_seed_daemon.daemon.state_dir / "audit.log"
        records = [json.loads(line) for line in log.read_text().splitlines()]
        last = [r for r in records if r.get("method") == "OpenSeedEnvelope"][-1]
        mine = [r for r in records if r.get("request_id") == last["request_id"]]
        assert [(r["event"], r.get("operation"), r.get("key")) for r in mine] == [
            ("op", "decrypt", "legacy-aws"),
            ("rpc", None, None),
        ]
        assert (mine[0]["decision"], mine[0]["code"]) == ("allow", "OK")


class TestKmsWrappedDekRefused:
    """What does not open gives its fixed error."""

    def test_tampered_envelope(self, kms):
        """A changed byte of the sealed data: EnvelopeDecryptionError with the fixed message."""
        record = json.loads(base64.b64decode(aws_seed_envelope(kms, b"x")))
        raw = bytearray(base64.b64decode(record["encrypted_data"]))
        raw[-1] ^= 1
        record["encrypted_data"] = base64.b64encode(bytes(raw)).decode()
        envelope = base64.b64encode(json.dumps(record).encode()).decode()
        encryptor = EnvelopeEncryptor(kms_backend=AWSKMSBackend(), key_id=kms.aws_arn)

        with pytest.raises(exceptions.EnvelopeDecryptionError, match=FIXED):
            encryptor.decrypt(envelope_data=envelope)

    @pytest.mark.parametrize(
        ("make", "key"),
        [
            (vault_seed_envelope, "second-vault"),
            (aws_seed_envelope, "legacy-vault"),
            (vault_seed_envelope, "legacy-gcp"),
        ],
        ids=["other-vault-key", "aws-dek-vault-key", "vault-dek-gcp-key"],
    )
    def test_wrong_key(self, kms_seed_daemon, migrator, make, key):
        """A key that did not wrap the DEK cannot unwrap it: the fixed message.

        (Moto answers AccessDenied where AWS answers IncorrectKeyException or
        InvalidCiphertextException, so AWS keys are not among the wrong keys here.)
        """
        old = make(kms_seed_daemon, b"x")

        with pytest.raises(keybroker_client.DecryptionError, match=FIXED):
            migrator.open_seed_envelope(old, key=key)

    def test_denied_before_any_kms_call(self, kms_seed_daemon):
        """A caller without decrypt on the key is refused at once, even with the KMS frozen."""
        old = aws_seed_envelope(kms_seed_daemon, b"x")
        kms_seed_daemon.moto.suspend()
        try:
            with keybroker_client.Client(kms_seed_daemon.other_socket) as other:
                with pytest.raises(keybroker_client.PermissionDeniedError, match="denied"):
                    other.open_seed_envelope(old, key="legacy-aws", timeout=5)
                with pytest.raises(keybroker_client.PermissionDeniedError):
                    other.open_seed_envelope(old, key="legacy-aws", reseal_key="records")
        finally:
            kms_seed_daemon.moto.resume()

    def test_oversize_envelope(self, migrator):
        """Over server.max_plaintext_bytes (65536 here) + 65536 bytes: the limit is named."""
        with pytest.raises(keybroker_client.InvalidParameterError, match="131072 bytes"):
            migrator.open_seed_envelope(b"A" * (131072 + 1), key="legacy-aws")

    def test_local_key(self, kms_seed_daemon, migrator):
        """A local:// key is refused: the application opens those with its master key."""
        old = aws_seed_envelope(kms_seed_daemon, b"x")

        with pytest.raises(keybroker_client.KeyStateError, match="master key"):
            migrator.open_seed_envelope(old, key="records")
