"""The `[keyring]` section: a KMS key that wraps the local keyring's root key."""

from __future__ import annotations

import pytest

from broker.config.keyring import KeyringConfig
from broker.config.load import load_config
from broker.errors import ConfigError

KEY = '[keys.default]\nuri = "local://default"\n'
URI = "aws-kms://alias/keybroker-root"


class TestKeyringSection:
    """[keyring] master_key_uri, from the file or KEYBROKER_KEYRING_MASTER_KEY_URI."""

    def test_default_is_no_uri(self, tmp_path):
        """Without the section the root key stays in master.key (or the env)."""
        path = tmp_path / "k.toml"
        path.write_text(KEY)
        assert load_config(path, env={}).keyring == KeyringConfig("")

    def test_file_then_env(self, tmp_path):
        """The file names a URI; the environment overrides it."""
        path = tmp_path / "k.toml"
        path.write_text(KEY + f'[keyring]\nmaster_key_uri = "{URI}"\n')
        assert load_config(path, env={}).keyring.master_key_uri == URI
        env = {"KEYBROKER_KEYRING_MASTER_KEY_URI": "vault-transit://transit/root"}
        assert load_config(path, env=env).keyring.master_key_uri == "vault-transit://transit/root"

    def test_dev_mode_takes_the_env(self):
        """`serve --dev` with the env variable wraps the dev keyring's root too."""
        cfg = load_config(env={"KEYBROKER_KEYRING_MASTER_KEY_URI": URI}, dev=True)
        assert cfg.keyring.master_key_uri == URI

    @pytest.mark.parametrize(
        ("table", "env", "message"),
        [
            ('master_key_uri = "local://root"', {}, "keyring.master_key_uri: expected aws-kms://"),
            ('master_key_uri = "s3://bucket/key"', {}, "keyring.master_key_uri: expected"),
            ("master_key_uri = 7", {}, "keyring.master_key_uri: expected a str"),
            ("master_uri = 'x'", {}, "keyring.master_uri: unknown setting"),
            (
                f'master_key_uri = "{URI}"',
                {"ECL_CRYPTO_LOCAL_MASTER_KEY": "ab" * 32},
                "keyring.master_key_uri: set either it or ECL_CRYPTO_LOCAL_MASTER_KEY, not both",
            ),
        ],
    )
    def test_errors_name_the_field(self, tmp_path, table, env, message):
        """A local or unknown URI, a typo, or two root keys stop the start, naming the field."""
        path = tmp_path / "k.toml"
        path.write_text(KEY + f"[keyring]\n{table}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path, env=env)
