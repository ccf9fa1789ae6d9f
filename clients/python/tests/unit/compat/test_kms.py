import base64
import json
import logging

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import keybroker_client
from keybroker_client.compat import exceptions
from keybroker_client.compat.kms import (
    AWSKMSBackend,
    BrokerKMSBackend,
    GCPKMSBackend,
    LocalKMSBackend,
    VaultKMSBackend,
)

ARN = "arn:aws:kms:us-east-1:123456789012:key/abcd-1234"
MASTER = bytes(range(32))


def seed_wrap(dek, master=MASTER):
    """The seed's local wrap, made with pyca: base64(nonce ‖ AES-GCM(master, DEK) ‖ tag)."""
    nonce = bytes(12)
    return base64.b64encode(nonce + AESGCM(master).encrypt(nonce, dek, None)).decode()


class TestKeyUris:
    """Each seed backend's key_id as the broker's key URI."""

    @pytest.mark.parametrize(
        ("backend", "key_id", "uri"),
        [
            (LocalKMSBackend(), "dev-key", "local://dev-key"),
            (AWSKMSBackend(region_name="us-east-1"), ARN, f"aws-kms://{ARN}"),
            (AWSKMSBackend(), "alias/app", "aws-kms://alias/app"),
            (
                GCPKMSBackend(project_id="p", location_id="l", key_ring_id="r"),
                "k",
                "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k",
            ),
            (
                GCPKMSBackend("p", "l", "r"),
                "projects/x/locations/y/keyRings/z/cryptoKeys/k",
                "gcp-kms://projects/x/locations/y/keyRings/z/cryptoKeys/k",
            ),
            (VaultKMSBackend(vault_url="https://v:8200"), "k", "vault-transit://transit/k"),
            (
                VaultKMSBackend("https://v:8200", mount_point="/kv/t/"),
                "k",
                "vault-transit://kv/t/k",
            ),
        ],
    )
    def test_uri(self, backend, key_id, uri):
        """The URI is the form the broker's configuration uses for that key."""
        assert backend.key_uri(key_id) == uri

    def test_vault_token_is_not_kept(self):
        """The Vault token is accepted and dropped: the broker holds Vault credentials."""
        backend = VaultKMSBackend(vault_url="https://v:8200", token="hvs.secret")  # noqa: S106 - a fake

        assert "hvs.secret" not in repr(vars(backend))
        assert "hvs.secret" not in repr(backend)

    @pytest.mark.parametrize("field", ["project_id", "location_id", "key_ring_id"])
    def test_gcp_ring_names_are_checked(self, field):
        """An empty or path-like ring name is a parameter error naming it."""
        names = {"project_id": "p", "location_id": "l", "key_ring_id": "r", field: "a/b"}

        with pytest.raises(exceptions.InvalidParameterError, match=field):
            GCPKMSBackend(**names)

    @pytest.mark.parametrize("size", [16, 31, 33])
    def test_local_master_key_is_32_bytes(self, size):
        """A master key of another size is refused."""
        with pytest.raises(exceptions.InvalidParameterError, match="32 bytes"):
            LocalKMSBackend(master_key=bytes(size))


@pytest.mark.usefixtures("fake_broker")
class TestResolution:
    """Finding the broker key for a backend key, once."""

    def test_by_uri(self):
        """The broker key whose URI matches is used, whatever its name."""
        assert AWSKMSBackend().broker_key(ARN) == "payments"
        assert LocalKMSBackend().broker_key("dev-key") == "dev"

    def test_by_name(self):
        """Without a URI match, a broker key of that very name is used."""
        assert AWSKMSBackend().broker_key("default") == "default"

    def test_broker_backend_takes_names(self, fake_broker):
        """BrokerKMSBackend's key ids are broker names, with no lookup."""
        assert BrokerKMSBackend().broker_key("anything") == "anything"
        assert fake_broker.calls == []

    def test_remembered(self, fake_broker):
        """The broker is asked once per key id."""
        backend = VaultKMSBackend("https://v:8200")

        assert backend.broker_key("reports") == backend.broker_key("reports") == "reports"
        assert fake_broker.calls == [("list_keys",)]

    def test_unknown_key_says_what_to_configure(self):
        """No matching key is KMSKeyNotFoundError naming the URI to declare."""
        backend = GCPKMSBackend("p", "l", "r")

        with pytest.raises(exceptions.KMSKeyNotFoundError) as caught:
            backend.broker_key("nope")

        message = str(caught.value)
        assert "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/nope" in message
        assert "[keys.NAME]" in message

    def test_listing_refused_falls_back_to_the_name(self, fake_broker):
        """A caller not allowed to list keys uses key_id as the broker key name."""
        fake_broker.list_error = keybroker_client.PermissionDeniedError("permission denied")

        assert AWSKMSBackend().broker_key("payments") == "payments"

    def test_broker_down_is_retryable(self, fake_broker):
        """An unreachable broker is a KMSUnavailableError (retry with backoff)."""
        fake_broker.list_error = keybroker_client.BrokerUnavailableError("unreachable")

        with pytest.raises(exceptions.KMSUnavailableError):
            AWSKMSBackend().broker_key(ARN)


@pytest.mark.usefixtures("fake_broker")
class TestOperations:
    """encrypt_key, decrypt_key and generate_data_key as broker calls."""

    def test_wrap_and_unwrap(self, fake_broker):
        """encrypt_key seals under the mapped key; decrypt_key opens it."""
        backend = AWSKMSBackend()

        wrapped = backend.encrypt_key(key_material=b"k" * 32, key_id=ARN)

        assert isinstance(wrapped, str)
        assert ("encrypt", "payments") in fake_broker.calls
        assert backend.decrypt_key(encrypted_key=wrapped, key_id=ARN) == b"k" * 32

    def test_generate_data_key(self):
        """A DEK and its wrapped form (base64 text) that decrypt_key opens."""
        backend = LocalKMSBackend()

        plaintext, wrapped = backend.generate_data_key(key_id="dev-key")

        assert backend.decrypt_key(wrapped, "dev-key") == plaintext

    def test_local_backend_warns(self, caplog):
        """LocalKMSBackend logs a development-only WARNING, as the seed did."""
        with caplog.at_level(logging.WARNING):
            LocalKMSBackend().generate_data_key("dev-key")

        assert "development only" in caplog.text

    def test_local_master_key_opens_the_seeds_wrap(self, fake_broker):
        """With the seed's master key, its wrapped DEKs open here, without the broker."""
        backend = LocalKMSBackend(master_key=MASTER)

        assert backend.decrypt_key(seed_wrap(b"d" * 32), "dev-key") == b"d" * 32
        assert backend.open_seed_dek(seed_wrap(b"e" * 32), "dev-key") == b"e" * 32
        assert ("decrypt",) not in fake_broker.calls

    def test_other_master_key_fails(self):
        """A DEK wrapped under another master key does not open."""
        backend = LocalKMSBackend(master_key=bytes(32))

        with pytest.raises(exceptions.EnvelopeDecryptionError, match="master key"):
            backend.open_seed_dek(seed_wrap(b"d" * 32), "dev-key")

    def test_kms_wrapped_seed_dek_is_never_returned(self, fake_broker):
        """A DEK only the broker unwraps is not handed out: the broker opens the envelope."""
        backend = AWSKMSBackend()

        assert backend.opens_seed_deks_here is False
        with pytest.raises(exceptions.EnvelopeError, match="unwrapped in the broker"):
            backend.open_seed_dek("AAAA", ARN)
        assert fake_broker.calls == []

    def test_seed_envelope_opens_in_the_broker(self, fake_broker):
        """open_seed_envelope sends the envelope's base64 text with the mapped broker key."""
        dek, nonce = b"k" * 32, b"n" * 12
        record = {
            "encrypted_dek": base64.b64encode(dek).decode(),
            "encrypted_data": base64.b64encode(
                nonce + AESGCM(dek).encrypt(nonce, b"old", None)
            ).decode(),
        }
        raw = json.dumps(record).encode()

        assert AWSKMSBackend().open_seed_envelope(raw, ARN) == b"old"
        assert fake_broker.calls[-1] == (
            "open_seed_envelope",
            "payments",
            None,
            base64.b64encode(raw),
        )

    def test_local_seed_dek_needs_the_master_key(self, fake_broker):
        """Without the seed's master key a local envelope cannot open anywhere: said so."""
        backend = LocalKMSBackend()

        assert backend.opens_seed_deks_here is False
        with pytest.raises(exceptions.EnvelopeError, match="master_key"):
            backend.open_seed_dek("AAAA", "dev-key")
        with pytest.raises(exceptions.EnvelopeError, match="ECL_CRYPTO_LOCAL_MASTER_KEY"):
            backend.open_seed_envelope(b"{}", "dev-key")
        assert fake_broker.calls == []
