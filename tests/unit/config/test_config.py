"""Configuration loading: precedence, seed names and one-line errors naming field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config.load import load_config
from broker.errors import ConfigError

KEY = '[keys.default]\nuri = "local://default"\n'


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keybroker.toml"
    path.write_text(text)
    return path


class TestSources:
    """Where each setting comes from."""

    def test_dev_defaults(self):
        """--dev serves the three dev keys from ./.keybroker."""
        cfg = load_config(env={}, dev=True)
        assert sorted(cfg.keys) == ["default", "hmac", "signing"]
        assert cfg.server.socket == Path(".keybroker/keybroker.sock")
        assert cfg.keys["signing"].purpose == "signing"

    def test_state_dir_flag_moves_the_socket(self, tmp_path):
        """A --state-dir in dev mode puts the socket inside it."""
        cfg = load_config(env={}, dev=True, state_dir=tmp_path)
        assert cfg.server.socket == tmp_path / "keybroker.sock"

    def test_env_overrides_file(self, tmp_path):
        """KEYBROKER_* variables win over the file."""
        path = _file(tmp_path, KEY + "[server]\nmax_batch_items = 10\n")
        cfg = load_config(
            path, env={"KEYBROKER_MAX_BATCH_ITEMS": "20", "KEYBROKER_SOCKET": "/x.sock"}
        )
        assert cfg.server.max_batch_items == 20
        assert cfg.server.socket == Path("/x.sock")

    @pytest.mark.parametrize(
        ("env", "uri"),
        [
            ({"ECL_CRYPTO_KMS_BACKEND": "local"}, "local://default"),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "aws", "ECL_CRYPTO_KMS_KEY_ID": "alias/app"},
                "aws-kms://alias/app",
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "vault", "ECL_CRYPTO_KMS_KEY_ID": "k"},
                "vault-transit://transit/k",
            ),
            (
                {
                    "ECL_CRYPTO_KMS_BACKEND": "vault",
                    "ECL_CRYPTO_KMS_KEY_ID": "k",
                    "ECL_CRYPTO_VAULT_MOUNT": "kv/t",
                },
                "vault-transit://kv/t/k",
            ),
            (
                {"ECL_CRYPTO_KMS_BACKEND": "gcp", "ECL_CRYPTO_KMS_KEY_ID": "projects/p/x"},
                "gcp-kms://projects/p/x",
            ),
        ],
    )
    def test_seed_backend_serves_default(self, env, uri):
        """The seed's backend and key id become logical key `default`."""
        assert load_config(env=env).keys["default"].uri == uri

    def test_seed_cache_names(self):
        """ECL_CRYPTO_DEK_CACHE_* set the cache; KEYBROKER_CACHE_* win over them."""
        env = {
            "ECL_CRYPTO_KMS_BACKEND": "local",
            "ECL_CRYPTO_DEK_CACHE_TTL": "60",
            "ECL_CRYPTO_DEK_CACHE_MAX_SIZE": "5",
            "ECL_CRYPTO_DEK_CACHE_ENABLED": "no",
            "KEYBROKER_CACHE_DECRYPT_TTL_SECONDS": "30",
        }
        cache = load_config(env=env).cache
        assert (cache.encrypt_max_age_seconds, cache.decrypt_ttl_seconds) == (60.0, 30.0)
        assert (cache.decrypt_max_entries, cache.enabled) == (5, False)

    def test_master_key_is_hidden(self):
        """The local master key is loaded but never shown in a repr."""
        key = "ab" * 32
        cfg = load_config(
            env={"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_LOCAL_MASTER_KEY": key}
        )
        assert cfg.local.master_key_hex == key
        assert key not in repr(cfg)


class TestErrors:
    """Each invalid setting fails with one line naming the field and the fix."""

    @pytest.mark.parametrize(
        ("text", "env", "expected"),
        [
            (
                KEY + "[server]\nmax_batch_items = 0\n",
                {},
                "server.max_batch_items: must be between 1 and 100000",
            ),
            (
                KEY + '[server]\nmax_batch_items = "x"\n',
                {},
                "server.max_batch_items: expected a int",
            ),
            (KEY + '[server]\nsockett = "/x"\n', {}, "server.sockett: unknown setting"),
            (KEY + "[serverr]\n", {}, "serverr: unknown section"),
            (KEY + '[logging]\nlevel = "loud"\n', {}, "logging.level: must be one of debug, info"),
            ('[keys.default]\nuri = "s3://x"\n', {}, "keys.default.uri: expected local://NAME"),
            ('[keys."bad name"]\nuri = "local://x"\n', {}, "keys.bad name: key names are 1..64"),
            ('[keys.default]\nuri = "local://x"\npurpose = "magic"\n', {}, "keys.default.purpose"),
            ("not toml [", {}, "is not valid TOML"),
            ("", {}, "keys: no keys configured"),
            (
                KEY,
                {"KEYBROKER_CACHE_ENCRYPT_MAX_MESSAGES": str(2**33)},
                (
                    "cache.encrypt_max_messages: must be between 1 and 4294967296 "
                    "(set in KEYBROKER_CACHE_ENCRYPT_MAX_MESSAGES)"
                ),
            ),
            (
                KEY,
                {"ECL_CRYPTO_LOCAL_MASTER_KEY": "zz"},
                "ECL_CRYPTO_LOCAL_MASTER_KEY: must be 64 hex characters",
            ),
            (
                KEY,
                {"KEYBROKER_SOCKET": "/" + "s" * 120},
                "server.socket: path longer than 107 bytes",
            ),
        ],
    )
    def test_invalid(self, tmp_path, text, env, expected):
        """The message starts with the field and carries the fix."""
        with pytest.raises(ConfigError) as info:
            load_config(_file(tmp_path, text), env=env)
        assert expected in str(info.value)
        assert "\n" not in str(info.value)

    def test_secret_value_not_echoed(self):
        """A malformed master key is not repeated in the error."""
        bad = "secret-not-hex-" * 4
        with pytest.raises(ConfigError) as info:
            load_config(env={"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_LOCAL_MASTER_KEY": bad})
        assert bad not in str(info.value)

    def test_missing_file(self, tmp_path):
        """A missing config file is named."""
        with pytest.raises(ConfigError, match="does not exist"):
            load_config(tmp_path / "nope.toml", env={})

    def test_seed_backend_needs_key_id(self):
        """A remote seed backend without a key id says which variable is missing."""
        with pytest.raises(ConfigError, match="ECL_CRYPTO_KMS_KEY_ID: required"):
            load_config(env={"ECL_CRYPTO_KMS_BACKEND": "aws"})
