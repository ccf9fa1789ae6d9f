"""The seed's ECL_CRYPTO_* variables: every name of its tables read with the seed's meaning."""

from __future__ import annotations

import pytest

from broker.config.env import known_seed_names, seed_warnings
from broker.config.load import load_config
from broker.config.validate import config_warnings, describe_keys, validated_config
from broker.errors import ConfigError

# The seed README's four example .env files, as it shows them.
AWS_ENV = """\
ECL_CRYPTO_KMS_BACKEND=aws
ECL_CRYPTO_KMS_KEY_ID=arn:aws:kms:us-east-1:123456789012:key/abcd-1234
ECL_CRYPTO_AWS_REGION=us-east-1
"""
GCP_ENV = """\
ECL_CRYPTO_KMS_BACKEND=gcp
ECL_CRYPTO_KMS_KEY_ID=my-crypto-key
ECL_CRYPTO_GCP_PROJECT_ID=my-project
ECL_CRYPTO_GCP_LOCATION_ID=us-east1
ECL_CRYPTO_GCP_KEY_RING_ID=my-keyring
"""
VAULT_ENV = """\
ECL_CRYPTO_KMS_BACKEND=vault
ECL_CRYPTO_KMS_KEY_ID=my-transit-key
ECL_CRYPTO_VAULT_URL=https://vault.example.com:8200
ECL_CRYPTO_VAULT_TOKEN=hvs.my-vault-token
"""
LOCAL_ENV = """\
ECL_CRYPTO_KMS_BACKEND=local
ECL_CRYPTO_KMS_KEY_ID=dev-key
"""
GCP_KEY = "projects/my-project/locations/us-east1/keyRings/my-keyring/cryptoKeys/my-crypto-key"

# Every variable of the seed's configuration tables (required, AWS, GCP, Vault, local, cache).
SEED_TABLE_NAMES = [
    "ECL_CRYPTO_KMS_BACKEND",
    "ECL_CRYPTO_KMS_KEY_ID",
    "ECL_CRYPTO_AWS_REGION",
    "ECL_CRYPTO_AWS_PROFILE",
    "ECL_CRYPTO_AWS_ENDPOINT_URL",
    "ECL_CRYPTO_GCP_PROJECT_ID",
    "ECL_CRYPTO_GCP_LOCATION_ID",
    "ECL_CRYPTO_GCP_KEY_RING_ID",
    "ECL_CRYPTO_VAULT_URL",
    "ECL_CRYPTO_VAULT_TOKEN",
    "ECL_CRYPTO_VAULT_MOUNT_POINT",
    "ECL_CRYPTO_VAULT_NAMESPACE",
    "ECL_CRYPTO_LOCAL_MASTER_KEY",
    "ECL_CRYPTO_DEK_CACHE_ENABLED",
    "ECL_CRYPTO_DEK_CACHE_MAX_SIZE",
    "ECL_CRYPTO_DEK_CACHE_TTL_SECONDS",
]


def dotenv(text: str) -> dict[str, str]:
    """The NAME=VALUE lines of a .env file."""
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip())


class TestSeedExamples:
    """The seed's .env examples configure the key and backend the seed intends."""

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            (
                AWS_ENV,
                (
                    "key default: envelope, aws-kms://arn:aws:kms:us-east-1:123456789012:key/"
                    "abcd-1234 (backend aws: region=us-east-1)"
                ),
            ),
            (GCP_ENV, f"key default: envelope, gcp-kms://{GCP_KEY} (backend gcp)"),
            (
                VAULT_ENV,
                (
                    "key default: envelope, vault-transit://transit/my-transit-key "
                    "(backend vault: address=https://vault.example.com:8200)"
                ),
            ),
            (LOCAL_ENV, "key default: envelope, local://dev-key (backend local)"),
        ],
        ids=["aws", "gcp", "vault", "local"],
    )
    def test_example_env_file(self, text, line):
        """validated_config serves the seed's key as `default` on the seed's backend."""
        cfg = validated_config(env=dotenv(text))

        assert describe_keys(cfg) == [line]
        assert config_warnings(env=dotenv(text)) == []

    def test_vault_token_reaches_the_backend_but_not_the_description(self):
        """The token configures the Vault backend and is never shown."""
        cfg = validated_config(env=dotenv(VAULT_ENV))

        assert cfg.backends["vault"]["token"] == "hvs.my-vault-token"  # noqa: S105 - seed example value
        assert "hvs." not in "\n".join(describe_keys(cfg))


class TestEveryTableName:
    """Each row of the seed's configuration tables is read, with the seed's meaning."""

    def test_every_name_is_known(self):
        """No name of the seed's tables is reported as unknown."""
        assert set(SEED_TABLE_NAMES) <= set(known_seed_names())
        assert seed_warnings(dict.fromkeys(SEED_TABLE_NAMES, "x"), config_file=False) == []

    @pytest.mark.parametrize(
        ("var", "value", "table", "field"),
        [
            ("ECL_CRYPTO_AWS_REGION", "eu-west-1", "aws", "region"),
            ("ECL_CRYPTO_AWS_PROFILE", "ops", "aws", "profile"),
            ("ECL_CRYPTO_AWS_ENDPOINT_URL", "http://localhost:4566", "aws", "endpoint_url"),
            ("ECL_CRYPTO_VAULT_URL", "https://v:8200", "vault", "address"),
            ("ECL_CRYPTO_VAULT_TOKEN", "t", "vault", "token"),
            ("ECL_CRYPTO_VAULT_NAMESPACE", "team", "vault", "namespace"),
        ],
    )
    def test_backend_variables(self, var, value, table, field):
        """AWS and Vault variables set the backend's fields."""
        cfg = load_config(env={"ECL_CRYPTO_KMS_BACKEND": "local", var: value})

        assert cfg.backends[table][field] == value

    def test_key_variables(self):
        """KMS_BACKEND and KMS_KEY_ID choose the key served as `default`."""
        env = {"ECL_CRYPTO_KMS_BACKEND": "aws", "ECL_CRYPTO_KMS_KEY_ID": "alias/app"}

        assert load_config(env=env).keys["default"].uri == "aws-kms://alias/app"

    def test_gcp_ring_builds_the_key_path(self):
        """PROJECT_ID, LOCATION_ID and KEY_RING_ID make the crypto key's full resource name."""
        assert load_config(env=dotenv(GCP_ENV)).keys["default"].uri == f"gcp-kms://{GCP_KEY}"

    def test_vault_mount_point(self):
        """VAULT_MOUNT_POINT is the transit mount in the key URI (default: transit)."""
        env = {**dotenv(VAULT_ENV), "ECL_CRYPTO_VAULT_MOUNT_POINT": "/kv/transit/"}

        assert (
            load_config(env=env).keys["default"].uri == "vault-transit://kv/transit/my-transit-key"
        )

    def test_local_master_key(self):
        """LOCAL_MASTER_KEY becomes the local backend's master key."""
        env = {**dotenv(LOCAL_ENV), "ECL_CRYPTO_LOCAL_MASTER_KEY": "AB" * 32}

        assert load_config(env=env).local.master_key_hex == "ab" * 32

    def test_cache_variables(self):
        """DEK_CACHE_ENABLED, MAX_SIZE and TTL_SECONDS configure the broker's DEK cache."""
        env = {
            **dotenv(LOCAL_ENV),
            "ECL_CRYPTO_DEK_CACHE_ENABLED": "false",
            "ECL_CRYPTO_DEK_CACHE_MAX_SIZE": "7",
            "ECL_CRYPTO_DEK_CACHE_TTL_SECONDS": "45",
        }

        cache = load_config(env=env).cache

        assert (cache.enabled, cache.decrypt_max_entries) == (False, 7)
        assert (cache.decrypt_ttl_seconds, cache.encrypt_max_age_seconds) == (45.0, 45.0)


class TestOlderNames:
    """The names the daemon read before keep working; the seed's name wins beside them."""

    @pytest.mark.parametrize(
        ("env", "uri"),
        [
            ({"ECL_CRYPTO_VAULT_MOUNT": "old"}, "vault-transit://old/k"),
            (
                {"ECL_CRYPTO_VAULT_MOUNT": "old", "ECL_CRYPTO_VAULT_MOUNT_POINT": "new"},
                "vault-transit://new/k",
            ),
        ],
    )
    def test_vault_mount(self, env, uri):
        """ECL_CRYPTO_VAULT_MOUNT still names the mount unless MOUNT_POINT is set."""
        base = {"ECL_CRYPTO_KMS_BACKEND": "vault", "ECL_CRYPTO_KMS_KEY_ID": "k"}

        assert load_config(env={**base, **env}).keys["default"].uri == uri

    def test_vault_address(self):
        """ECL_CRYPTO_VAULT_ADDR still sets the address; ECL_CRYPTO_VAULT_URL wins over it."""
        env = {"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_VAULT_ADDR": "http://old:1"}

        assert load_config(env=env).backends["vault"]["address"] == "http://old:1"
        env["ECL_CRYPTO_VAULT_URL"] = "http://new:2"
        assert load_config(env=env).backends["vault"]["address"] == "http://new:2"

    def test_cache_ttl(self):
        """ECL_CRYPTO_DEK_CACHE_TTL still sets the TTL; TTL_SECONDS wins over it."""
        env = {"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_DEK_CACHE_TTL": "60"}

        assert load_config(env=env).cache.decrypt_ttl_seconds == 60.0
        env["ECL_CRYPTO_DEK_CACHE_TTL_SECONDS"] = "30"
        assert load_config(env=env).cache.decrypt_ttl_seconds == 30.0


class TestGcpErrors:
    """A GCP key the daemon cannot name fails at start, naming the variable."""

    @pytest.mark.parametrize("missing", ["ECL_CRYPTO_GCP_PROJECT_ID", "ECL_CRYPTO_GCP_KEY_RING_ID"])
    def test_missing_ring_variable(self, missing):
        """Each of the three ring variables is required for a short key name."""
        env = dotenv(GCP_ENV)
        del env[missing]

        with pytest.raises(ConfigError, match=f"^{missing}: required when"):
            load_config(env=env)

    def test_slash_in_a_ring_name(self):
        """A ring name holding a path would build another resource name: refused."""
        env = {**dotenv(GCP_ENV), "ECL_CRYPTO_GCP_LOCATION_ID": "us/east1"}

        with pytest.raises(ConfigError, match=r"^ECL_CRYPTO_GCP_LOCATION_ID: a single name"):
            load_config(env=env)

    def test_full_path_needs_no_ring(self):
        """A key id that is already a full resource name is used as it is."""
        env = {"ECL_CRYPTO_KMS_BACKEND": "gcp", "ECL_CRYPTO_KMS_KEY_ID": GCP_KEY}

        assert load_config(env=env).keys["default"].uri == f"gcp-kms://{GCP_KEY}"


class TestWarnings:
    """Variables that are set but not read are reported, never silently ignored."""

    @pytest.mark.parametrize(
        ("var", "closest"),
        [
            ("ECL_CRYPTO_VAULT_ADRESS", "ECL_CRYPTO_VAULT_ADDR"),
            ("ECL_CRYPTO_GCP_PROJECT", "ECL_CRYPTO_GCP_PROJECT_ID"),
            ("ECL_CRYPTO_DEK_CACHE_TTL_SECS", "ECL_CRYPTO_DEK_CACHE_TTL_SECONDS"),
            ("ECL_CRYPTO_KMS_KEYID", "ECL_CRYPTO_KMS_KEY_ID"),
        ],
    )
    def test_unknown_name_suggests_the_closest(self, var, closest):
        """An unknown ECL_CRYPTO_* name is one line naming the closest known name."""
        warnings = seed_warnings({var: "x", "OTHER": "y"}, config_file=False)

        assert warnings == [f"{var}: unknown variable, ignored; did you mean {closest}?"]

    def test_key_variables_beside_a_config_file(self, tmp_path):
        """With a file, the seed's key variables are ignored, and the warning says so."""
        warnings = config_warnings(tmp_path / "k.toml", dotenv(GCP_ENV))

        assert len(warnings) == 5
        assert warnings[0].startswith("ECL_CRYPTO_GCP_KEY_RING_ID: ignored because a config")

    def test_warnings_do_not_change_the_configuration(self):
        """An unknown name beside a valid setup still validates."""
        env = {**dotenv(LOCAL_ENV), "ECL_CRYPTO_UNKNOWN": "1"}

        assert validated_config(env=env).keys["default"].uri == "local://dev-key"
