"""Known-answer vectors (tests/vectors/known_answers.json) and a fake broker for compat tests."""

import base64
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import keybroker_client
from keybroker_client import _facade

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "known_answers.json"


@pytest.fixture(scope="session")
def vectors():
    """The published test vectors, by algorithm."""
    return json.loads(VECTORS.read_text())


class FakeBroker:
    """Stands in for the shared Client: lists keys and seals recognisable fake envelopes.

    A fake envelope is the broker's format byte, then `key:plaintext`, so tests can see
    which logical key sealed what without a daemon.
    """

    def __init__(self, keys):
        """Serve these KeyInfo records; record every call."""
        self.keys = keys
        self.calls = []
        self.list_error = None

    def list_keys(self):
        """The configured keys, or the configured failure."""
        self.calls.append(("list_keys",))
        if self.list_error is not None:
            raise self.list_error
        return self.keys

    def encrypt(self, plaintext, *, key, **_options):
        """Seal as the format byte 1, then key:plaintext."""
        self.calls.append(("encrypt", key))
        return b"\x01" + key.encode() + b":" + plaintext

    def decrypt(self, ciphertext, **_options):
        """Open what encrypt sealed; anything else fails as the broker does."""
        self.calls.append(("decrypt",))
        if not ciphertext.startswith(b"\x01") or b":" not in ciphertext:
            raise keybroker_client.DecryptionError(
                "ciphertext could not be decrypted", reason="DECRYPTION_FAILED"
            )
        return ciphertext.split(b":", 1)[1]

    def open_seed_envelope(self, envelope, *, key, reseal_key=None, **_options):
        """Open a seed envelope whose fake KMS left the DEK as is (encrypted_dek = base64 DEK).

        Records (open_seed_envelope, key, reseal_key, envelope text); reseals like encrypt.
        """
        self.calls.append(("open_seed_envelope", key, reseal_key, envelope))
        record = json.loads(base64.b64decode(envelope, validate=True))
        data = base64.b64decode(record["encrypted_data"])
        try:
            dek = base64.b64decode(record["encrypted_dek"])
            plaintext = AESGCM(dek).decrypt(data[:12], data[12:], None)
        except (InvalidTag, ValueError):
            raise keybroker_client.DecryptionError(
                "ciphertext could not be decrypted", reason="DECRYPTION_FAILED"
            ) from None
        if reseal_key is None:
            return plaintext
        return self.encrypt(plaintext, key=reseal_key)

    def generate_data_key(self, *, key, **_options):
        """A fixed 32-byte key and its fake envelope."""
        self.calls.append(("generate_data_key", key))
        return b"d" * 32, self.encrypt(b"d" * 32, key=key)


def key_info(name, uri):
    """A KeyInfo for an envelope key."""
    return keybroker_client.KeyInfo(
        name=name,
        uri=uri,
        backend=uri.partition("://")[0],
        purpose="envelope",
        algorithm="aes-256-gcm",
        current_version=1,
        versions=(),
        rotatable=True,
    )


@pytest.fixture
def fake_broker(monkeypatch):
    """Route the compat layer's broker calls to a FakeBroker with a few keys."""
    broker = FakeBroker(
        [
            key_info("default", "local://my-app-key"),
            key_info("dev", "local://dev-key"),
            key_info("payments", "aws-kms://arn:aws:kms:us-east-1:123456789012:key/abcd-1234"),
            key_info("reports", "vault-transit://transit/reports"),
        ]
    )
    monkeypatch.setattr(_facade, "shared_client", lambda: broker)
    return broker
