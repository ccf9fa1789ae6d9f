import pytest

from keybroker_client.compat import _autoconfig, exceptions
from keybroker_client.compat.kms import (
    AWSKMSBackend,
    BrokerKMSBackend,
    GCPKMSBackend,
    LocalKMSBackend,
    VaultKMSBackend,
)

GCP_RING = {
    "ECL_CRYPTO_GCP_PROJECT_ID": "my-project",
    "ECL_CRYPTO_GCP_LOCATION_ID": "us-east1",
    "ECL_CRYPTO_GCP_KEY_RING_ID": "my-keyring",
}


def backend_and_key(env):
    """The backend class and key id the environment configures."""
    encryptor = _autoconfig.encryptor_from_env(env)
    return type(encryptor.kms_backend), encryptor.key_id


class TestFromEnvironment:
    """The package-level functions configure themselves from the seed's variables."""

    def test_without_seed_variables_the_brokers_default_key(self):
        """No ECL_CRYPTO_KMS_BACKEND: the broker's key `default`, named directly."""
        assert backend_and_key({}) == (BrokerKMSBackend, "default")

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({"ECL_CRYPTO_KMS_BACKEND": "local"}, (LocalKMSBackend, "default")),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "LOCAL", "ECL_CRYPTO_KMS_KEY_ID": "dev-key"},
                (LocalKMSBackend, "dev-key"),
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "aws", "ECL_CRYPTO_KMS_KEY_ID": "alias/a"},
                (AWSKMSBackend, "alias/a"),
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "gcp", "ECL_CRYPTO_KMS_KEY_ID": "k", **GCP_RING},
                (GCPKMSBackend, "k"),
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "vault", "ECL_CRYPTO_KMS_KEY_ID": "t"},
                (VaultKMSBackend, "t"),
            ),
        ],
    )
    def test_backend_and_key(self, env, expected):
        """ECL_CRYPTO_KMS_BACKEND picks the backend class, ECL_CRYPTO_KMS_KEY_ID the key."""
        assert backend_and_key(env) == expected

    def test_gcp_ring_and_vault_mount_build_the_uri(self):
        """The GCP ring variables and the Vault mount point shape the key's URI."""
        gcp = _autoconfig.encryptor_from_env(
            {"ECL_CRYPTO_KMS_BACKEND": "gcp", "ECL_CRYPTO_KMS_KEY_ID": "k", **GCP_RING}
        )
        vault = _autoconfig.encryptor_from_env(
            {
                "ECL_CRYPTO_KMS_BACKEND": "vault",
                "ECL_CRYPTO_KMS_KEY_ID": "t",
                "ECL_CRYPTO_VAULT_MOUNT_POINT": "kv",
            }
        )

        assert gcp.kms_backend.key_uri("k") == (
            "gcp-kms://projects/my-project/locations/us-east1/keyRings/my-keyring/cryptoKeys/k"
        )
        assert vault.kms_backend.key_uri("t") == "vault-transit://kv/t"

    def test_cache_settings(self):
        """ECL_CRYPTO_DEK_CACHE_* size the cache; it is on by default and can be turned off."""
        on = _autoconfig.encryptor_from_env(
            {"ECL_CRYPTO_DEK_CACHE_MAX_SIZE": "5", "ECL_CRYPTO_DEK_CACHE_TTL_SECONDS": "9"}
        )
        off = _autoconfig.encryptor_from_env({"ECL_CRYPTO_DEK_CACHE_ENABLED": "false"})

        assert (on.dek_cache.max_size, on.dek_cache.ttl_seconds) == (5, 9)
        assert off.dek_cache is None

    def test_local_master_key_is_read_for_old_envelopes(self):
        """ECL_CRYPTO_LOCAL_MASTER_KEY reaches the local backend, which opens seed envelopes."""
        encryptor = _autoconfig.encryptor_from_env(
            {"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_LOCAL_MASTER_KEY": "ab" * 32}
        )

        assert encryptor.kms_backend._master_key == bytes.fromhex("ab" * 32)

    @pytest.mark.parametrize(
        ("env", "error", "message"),
        [
            (
                {"ECL_CRYPTO_KMS_BACKEND": "azure"},
                exceptions.UnsupportedBackendError,
                "expected one of aws, gcp, vault, local",
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "aws"},
                exceptions.InvalidParameterError,
                "ECL_CRYPTO_KMS_KEY_ID is required",
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "gcp", "ECL_CRYPTO_KMS_KEY_ID": "k"},
                exceptions.InvalidParameterError,
                "needs ECL_CRYPTO_GCP_PROJECT_ID",
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_LOCAL_MASTER_KEY": "zz"},
                exceptions.InvalidParameterError,
                "64 hex",
            ),
            (
                {"ECL_CRYPTO_DEK_CACHE_MAX_SIZE": "-1"},
                exceptions.InvalidParameterError,
                "ECL_CRYPTO_DEK_CACHE_MAX_SIZE must be a positive integer",
            ),
            (
                {"ECL_CRYPTO_DEK_CACHE_ENABLED": "maybe"},
                exceptions.InvalidParameterError,
                "true or false",
            ),
        ],
    )
    def test_errors_name_the_variable(self, env, error, message):
        """A wrong setting fails on first use, naming the variable."""
        with pytest.raises(error, match=message):
            _autoconfig.encryptor_from_env(env)

    def test_built_once_and_reset(self, monkeypatch):
        """The first call reads the environment; later calls share the encryptor."""
        monkeypatch.setenv("ECL_CRYPTO_KMS_BACKEND", "aws")
        monkeypatch.setenv("ECL_CRYPTO_KMS_KEY_ID", "alias/a")
        _autoconfig.reset_default_encryptor()
        first = _autoconfig.default_encryptor()
        monkeypatch.setenv("ECL_CRYPTO_KMS_KEY_ID", "alias/b")

        assert _autoconfig.default_encryptor() is first
        _autoconfig.reset_default_encryptor()
        assert _autoconfig.default_encryptor().key_id == "alias/b"
        _autoconfig.reset_default_encryptor()
