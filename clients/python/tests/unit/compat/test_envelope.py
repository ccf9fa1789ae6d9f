import base64
import json
import logging

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keybroker_client.compat import (
    DEKCache,
    EnvelopeEncryptor,
    KMSBackend,
    LocalKMSBackend,
    exceptions,
)
from keybroker_client.compat.kms import AWSKMSBackend, VaultKMSBackend

MASTER = bytes(range(32))
ARN = "arn:aws:kms:us-east-1:123456789012:key/abcd-1234"


class WrappingBackend(KMSBackend):
    """A caller's own backend: wraps DEKs under one AES key and counts unwraps."""

    def __init__(self):
        """One fixed key-encryption key."""
        self.kek = AESGCM(b"w" * 32)
        self.unwraps = 0

    def encrypt_key(self, key_material, key_id):
        """AES-GCM with the key id as associated data, as base64."""
        nonce = bytes(12)
        return base64.b64encode(nonce + self.kek.encrypt(nonce, key_material, key_id.encode()))

    def decrypt_key(self, encrypted_key, key_id):
        """Undo encrypt_key."""
        self.unwraps += 1
        raw = base64.b64decode(encrypted_key)
        return self.kek.decrypt(raw[:12], raw[12:], key_id.encode())


class TextWrappingBackend(WrappingBackend):
    """WrappingBackend returning text, as the interface asks."""

    def encrypt_key(self, key_material, key_id):
        """The wrapped DEK as str."""
        return super().encrypt_key(key_material, key_id).decode()


def seed_envelope(plaintext, master=MASTER, key_id="dev-key", dek=b"d" * 32, **changes):
    """An envelope as the seed's LocalKMSBackend made it, built here with pyca."""
    nonce = b"n" * 12
    wrap_nonce = b"m" * 12
    record = {
        "version": 1,
        "encrypted_dek": base64.b64encode(
            wrap_nonce + AESGCM(master).encrypt(wrap_nonce, dek, None)
        ).decode(),
        "key_id": key_id,
        "encrypted_data": base64.b64encode(
            nonce + AESGCM(dek).encrypt(nonce, plaintext, None)
        ).decode(),
        "algorithm": "AES-256-GCM",
        "timestamp": "2026-04-08T12:00:00+00:00",
        **changes,
    }
    return base64.b64encode(json.dumps(record).encode()).decode()


@pytest.fixture
def audit(caplog):
    """The audit entries logged during the test, parsed."""
    caplog.set_level(logging.INFO, logger="ecl_crypto_utility.audit")
    return lambda: [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "ecl_crypto_utility.audit"
    ]


class TestWithACallersBackend:
    """A KMSBackend subclass of the caller's own runs the seed's flow in this process."""

    def test_round_trip_in_the_seeds_format(self):
        """The envelope is base64 JSON with the seed's fields, and it decrypts."""
        encryptor = EnvelopeEncryptor(kms_backend=TextWrappingBackend(), key_id="k1")

        envelope = encryptor.encrypt(plaintext=b"customer data")

        record = json.loads(base64.b64decode(envelope))
        assert sorted(record) == [
            "algorithm",
            "encrypted_data",
            "encrypted_dek",
            "key_id",
            "timestamp",
            "version",
        ]
        assert (record["version"], record["algorithm"], record["key_id"]) == (
            1,
            "AES-256-GCM",
            "k1",
        )
        assert encryptor.decrypt(envelope_data=envelope) == b"customer data"

    def test_each_envelope_has_its_own_dek(self):
        """Two encryptions wrap two different DEKs."""
        encryptor = EnvelopeEncryptor(TextWrappingBackend(), "k1")

        first, second = (json.loads(base64.b64decode(encryptor.encrypt(b"x"))) for _ in range(2))

        assert first["encrypted_dek"] != second["encrypted_dek"]

    def test_cache_saves_the_second_unwrap(self, audit):
        """With a DEKCache the backend unwraps once; the audit entry says which was a hit."""
        backend = TextWrappingBackend()
        encryptor = EnvelopeEncryptor(backend, "k1", dek_cache=DEKCache())
        envelope = encryptor.encrypt(b"data")

        encryptor.decrypt(envelope)
        encryptor.decrypt(envelope)

        assert backend.unwraps == 1
        hits = [e["metadata"]["cache_hit"] for e in audit() if e["operation"] == "decrypt_dek"]
        assert hits == [False, True]

    def test_backend_returning_bytes_is_a_kms_error(self):
        """encrypt_key must return text, as the interface says."""
        encryptor = EnvelopeEncryptor(WrappingBackend(), "k1")

        with pytest.raises(exceptions.KMSError, match="must return base64 text"):
            encryptor.encrypt(b"x")

    def test_backend_failure_is_a_kms_error_with_cause(self, audit):
        """What the backend raises becomes a KMSError; the audit entry records the failure."""

        class Broken(TextWrappingBackend):
            def encrypt_key(self, *_args):
                raise RuntimeError("hsm offline")

        with pytest.raises(exceptions.KMSError, match=r"Broken\.encrypt_key failed") as caught:
            EnvelopeEncryptor(Broken(), "k1").encrypt(b"x")

        assert isinstance(caught.value.cause, RuntimeError)
        [entry] = audit()
        assert entry["success"] is False
        assert entry["metadata"]["error"].startswith("KMSError")


@pytest.mark.usefixtures("fake_broker")
class TestSeedEnvelopes:
    """Envelopes the seed sealed: checked, opened with its local master key, migrated."""

    @pytest.mark.parametrize(
        ("envelope", "message"),
        [
            ("%%%", "not the base64 text"),
            (base64.b64encode(b"\x07junk").decode(), "neither a broker envelope"),
            (base64.b64encode(b"{not json").decode(), "not valid JSON"),
            (seed_envelope(b"x", version=2), "unsupported envelope version 2"),
            (seed_envelope(b"x", algorithm="AES-128-CBC"), "unsupported envelope algorithm"),
            (seed_envelope(b"x", encrypted_dek=""), "encrypted_dek must be a non-empty"),
        ],
        ids=["not-base64", "unknown", "not-json", "version", "algorithm", "missing-dek"],
    )
    def test_malformed_is_an_envelope_error(self, envelope, message):
        """Every malformed envelope is an EnvelopeError saying what is wrong."""
        encryptor = EnvelopeEncryptor(LocalKMSBackend(master_key=MASTER), "dev-key")

        with pytest.raises(exceptions.EnvelopeError, match=message):
            encryptor.decrypt(envelope)

    def test_opened_with_the_master_key(self, audit):
        """The seed's local envelope opens with its master key, logged as a seed envelope."""
        encryptor = EnvelopeEncryptor(LocalKMSBackend(master_key=MASTER), "dev-key")

        assert encryptor.decrypt(seed_envelope(b"old data")) == b"old data"
        [entry] = audit()
        assert entry["metadata"]["format"] == "ecl_crypto_utility"

    def test_tampered_data_is_an_envelope_decryption_error(self):
        """A changed ciphertext fails as both EnvelopeError and DecryptionError."""
        record = json.loads(base64.b64decode(seed_envelope(b"old")))
        raw = bytearray(base64.b64decode(record["encrypted_data"]))
        raw[-1] ^= 1
        record["encrypted_data"] = base64.b64encode(bytes(raw)).decode()
        envelope = base64.b64encode(json.dumps(record).encode()).decode()

        with pytest.raises(exceptions.DecryptionError) as caught:
            EnvelopeEncryptor(LocalKMSBackend(master_key=MASTER), "dev-key").decrypt(envelope)

        assert isinstance(caught.value, exceptions.EnvelopeError)

    def test_migrate_reseals_in_the_broker(self, audit):
        """Migrating returns a broker envelope under the mapped key, holding the same data."""
        encryptor = EnvelopeEncryptor(LocalKMSBackend(master_key=MASTER), "dev-key")

        migrated = encryptor.migrate(seed_envelope(b"old data"))

        assert base64.b64decode(migrated) == b"\x01dev:old data"
        assert encryptor.migrate(migrated) == migrated
        assert [e["operation"] for e in audit()] == ["decrypt_dek", "encrypt_dek"]

    def test_migrate_to_a_named_key(self):
        """key= chooses the broker key of the migrated envelope."""
        encryptor = EnvelopeEncryptor(LocalKMSBackend(master_key=MASTER), "dev-key")

        migrated = encryptor.migrate(seed_envelope(b"x"), key="default")

        assert base64.b64decode(migrated).startswith(b"\x01default:")


def kms_seed_envelope(plaintext, key_id=ARN, **changes):
    """A seed envelope whose DEK a KMS wrapped; the fake broker's KMS leaves the DEK as is."""
    dek = b"k" * 32
    changes = {"encrypted_dek": base64.b64encode(dek).decode(), **changes}
    return seed_envelope(plaintext, key_id=key_id, dek=dek, **changes)


@pytest.mark.usefixtures("fake_broker")
class TestSeedEnvelopesOpenedInTheBroker:
    """Seed envelopes of AWS KMS, Cloud KMS and Vault transit keys: the broker opens them."""

    @pytest.mark.parametrize(
        ("backend", "key_id", "broker_key"),
        [
            (AWSKMSBackend(region_name="us-east-1"), ARN, "payments"),
            (VaultKMSBackend("https://v:8200"), "reports", "reports"),
        ],
        ids=["aws", "vault"],
    )
    def test_decrypt(self, fake_broker, audit, backend, key_id, broker_key):
        """The broker opens it, with the broker key that the envelope's key_id maps to."""
        encryptor = EnvelopeEncryptor(backend, key_id)

        assert encryptor.decrypt(kms_seed_envelope(b"old data", key_id)) == b"old data"
        assert fake_broker.calls[-1][:3] == ("open_seed_envelope", broker_key, None)
        [entry] = audit()
        assert (entry["operation"], entry["metadata"]["format"]) == (
            "decrypt_dek",
            "ecl_crypto_utility",
        )

    def test_migrate_reseals_in_one_call(self, fake_broker, audit):
        """Migrating has the broker reseal under the mapped key: no plaintext comes back."""
        encryptor = EnvelopeEncryptor(AWSKMSBackend(), ARN)

        migrated = encryptor.migrate(kms_seed_envelope(b"old data"))

        assert base64.b64decode(migrated) == b"\x01payments:old data"
        # one call from the client; the fake broker reseals through its own encrypt
        assert [c[:3] for c in fake_broker.calls if c[0] != "list_keys"] == [
            ("open_seed_envelope", "payments", "payments"),
            ("encrypt", "payments"),
        ]
        assert [e["operation"] for e in audit()] == ["decrypt_dek", "encrypt_dek"]

    def test_migrate_to_a_named_key(self):
        """key= names the broker key the envelope is resealed under."""
        migrated = EnvelopeEncryptor(AWSKMSBackend(), ARN).migrate(
            kms_seed_envelope(b"x"), key="default"
        )

        assert base64.b64decode(migrated) == b"\x01default:x"

    def test_refusal_is_an_envelope_decryption_error(self, audit):
        """The broker's fixed decryption failure is EnvelopeDecryptionError, audited."""
        envelope = kms_seed_envelope(b"x", encrypted_dek=base64.b64encode(b"j" * 32).decode())

        with pytest.raises(exceptions.EnvelopeDecryptionError, match="could not be decrypted"):
            EnvelopeEncryptor(AWSKMSBackend(), ARN).decrypt(envelope)

        [entry] = audit()
        assert entry["success"] is False

    def test_dek_cache_is_not_used(self):
        """The DEK never reaches this process, so there is nothing to cache."""
        cache = DEKCache()
        encryptor = EnvelopeEncryptor(AWSKMSBackend(), ARN, dek_cache=cache)

        encryptor.decrypt(kms_seed_envelope(b"x"))

        assert cache.size == 0

    def test_local_without_master_key_is_explained(self, fake_broker):
        """A seed LocalKMSBackend envelope needs the master key; the broker is not asked."""
        with pytest.raises(exceptions.EnvelopeError, match="master_key"):
            EnvelopeEncryptor(LocalKMSBackend(), "dev-key").decrypt(seed_envelope(b"x"))

        assert not any(c[0] == "open_seed_envelope" for c in fake_broker.calls)


@pytest.mark.usefixtures("fake_broker")
class TestWithBrokerBackends:
    """The shipped backends seal and open in the broker."""

    def test_round_trip_through_the_broker(self, audit):
        """Encrypting seals under the broker key the backend key maps to; decrypt opens it."""
        encryptor = EnvelopeEncryptor(LocalKMSBackend(), "dev-key")

        envelope = encryptor.encrypt(b"data")

        assert base64.b64decode(envelope) == b"\x01dev:data"
        assert encryptor.decrypt(envelope) == b"data"
        entries = audit()
        assert [e["operation"] for e in entries] == ["encrypt_dek", "decrypt_dek"]
        assert entries[0]["metadata"]["broker_key"] == "dev"

    def test_broker_refusal_is_an_envelope_decryption_error(self, audit):
        """The broker's decryption failure reaches the caller as EnvelopeDecryptionError."""
        envelope = base64.b64encode(b"\x01corrupt").decode()

        with pytest.raises(exceptions.EnvelopeDecryptionError):
            EnvelopeEncryptor(LocalKMSBackend(), "dev-key").decrypt(envelope)

        assert audit()[0]["success"] is False

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({"kms_backend": object(), "key_id": "k"}, "kms_backend must be a KMSBackend"),
            ({"kms_backend": LocalKMSBackend(), "key_id": ""}, "key_id must be"),
            (
                {"kms_backend": LocalKMSBackend(), "key_id": "k", "dek_cache": {}},
                "dek_cache must be",
            ),
        ],
    )
    def test_constructor_checks(self, arguments, message):
        """Wrong arguments are parameter errors naming the argument."""
        with pytest.raises(exceptions.InvalidParameterError, match=message):
            EnvelopeEncryptor(**arguments)
