"""validated_config: load_config plus every check the daemon makes while wiring, with no KMS."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from broker.config.schema import KeyConfig
from broker.config.validate import local_key_type_of, validated_config
from broker.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

LOCAL = '[keys.default]\nuri = "local://default"\n'
VAULT = '[backends.vault]\naddress = "http://127.0.0.1:8200"\n'
SDKS = ("boto3", "botocore", "hvac", "google", "google_crc32c", "pkcs11")


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keybroker.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


class TestValidatedConfig:
    """What `serve` and `config check` both refuse, before anything binds."""

    def test_valid_config_is_returned(self, tmp_path):
        """A correct file gives the same Config load_config builds."""
        text = LOCAL + '[keys.signer]\nuri = "vault-transit://transit/s"\npurpose = "signing"\n'
        cfg = validated_config(_file(tmp_path, text + VAULT), env={})
        assert sorted(cfg.keys) == ["default", "signer"]
        assert cfg.backends["vault"]["address"] == "http://127.0.0.1:8200"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (LOCAL + VAULT + "timeout = 'ten'\n", "backends.vault.timeout: expected float"),
            (LOCAL + "[backends.vault]\nauth = 'token'\n", "backends.vault.address: required"),
            (
                '[keys.k]\nuri = "vault-transit://transit/k"\n',
                "backends.vault.address: required",
            ),
            (
                LOCAL + "[backends.gcp]\nendpoint = 'kms.example'\n",
                "backends.gcp.endpoint must be HOST:PORT",
            ),
            (
                LOCAL + VAULT + "[backends.vault.resilience]\ntimeout = 'soon'\n",
                "backends.vault.resilience.timeout: expected float",
            ),
            (
                LOCAL + VAULT + "resilience = 3\n",
                "backends.vault.resilience: expected a table",
            ),
            (
                LOCAL + '[keyring]\nmaster_key_uri = "pkcs11://token/root"\n',
                "backends.pkcs11.token_label: required",
            ),
            (
                '[keys.k]\nuri = "aws-kms://alias/x"\npurpose = "hmac"\n',
                "keys.k.purpose: aws-kms:// keys serve envelope, signing, not hmac",
            ),
            (
                '[keys.k]\nuri = "vault-transit://transit/x"\npurpose = "derivation"\n' + VAULT,
                (
                    "keys.k.purpose: vault-transit:// keys serve envelope, signing, hmac, "
                    "not derivation"
                ),
            ),
            (
                '[keys.k]\nuri = "gcp-kms://projects/p/x"\npurpose = "signing"\n',
                "keys.k.purpose: gcp-kms:// keys serve envelope, not signing",
            ),
            (
                '[keys.k]\nuri = "local://k"\npurpose = "signing"\nalso_wrap = ["local://m"]\n',
                "keys.k.also_wrap: only envelope keys are wrapped by several backends",
            ),
            (
                '[keys.k]\nuri = "local://k"\npurpose = "hmac"\nalgorithm = "md5"\n',
                "keys.k.algorithm: hmac keys take one of hmac-sha256 (got 'md5')",
            ),
        ],
    )
    def test_refused_with_one_line(self, tmp_path, text, message):
        """Each mistake stops validation with the line the daemon would stop with."""
        with pytest.raises(ConfigError) as info:
            validated_config(_file(tmp_path, text), env={})
        assert str(info.value) == message

    def test_unknown_field_lists_the_known_ones(self, tmp_path):
        """A misspelt field in a table no key uses is refused, naming the right spelling."""
        with pytest.raises(ConfigError) as info:
            validated_config(_file(tmp_path, LOCAL + VAULT + 'adress = "x"\n'), env={})
        assert str(info.value).startswith("backends.vault.adress: unknown setting (known: address,")

    def test_environment_fills_the_table(self, tmp_path):
        """ECL_CRYPTO_* backend variables are checked like fields of the file."""
        env = {"ECL_CRYPTO_AWS_ENDPOINT_URL": "localhost:4566"}
        with pytest.raises(ConfigError) as info:
            validated_config(_file(tmp_path, '[keys.k]\nuri = "aws-kms://alias/x"\n'), env=env)
        assert str(info.value) == "backends.aws.endpoint_url must start with http:// or https://"

    def test_backends_entry_must_be_a_table(self, tmp_path):
        """A backend given as a value instead of a table is a one-line error naming the file."""
        path = _file(tmp_path, LOCAL + "[backends]\nvault = 3\n")
        with pytest.raises(ConfigError) as info:
            validated_config(path, env={})
        assert str(info.value) == f"backends.vault: expected a table ({path})"

    def test_imports_no_vendor_sdk(self, tmp_path):
        """Tables and keys of every remote backend are checked without loading any vendor SDK."""
        text = (
            '[keys.a]\nuri = "aws-kms://alias/a"\npurpose = "signing"\n'
            '[keys.v]\nuri = "vault-transit://transit/v"\npurpose = "hmac"\n'
            '[keys.g]\nuri = "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/g"\n'
            '[keys.h]\nuri = "pkcs11://token/h"\n'
            "[backends.aws]\nregion = 'eu-west-1'\n[backends.aws.resilience]\ntimeout = 2.0\n"
            f"{VAULT}[backends.gcp]\nendpoint = '127.0.0.1:1'\n"
            "[backends.pkcs11]\ntoken_label = 'token'\npin_file = '/run/pin'\n"
        )
        script = (
            "import json, sys\n"
            "from pathlib import Path\n"
            "from broker.config.validate import validated_config\n"
            f"cfg = validated_config(Path(sys.argv[1]), env={{}})\n"
            f"sdks = sorted(m for m in sys.modules if m.split('.')[0] in {SDKS!r})\n"
            "print(json.dumps([len(cfg.keys), sdks]))\n"
        )
        path = _file(tmp_path, text)
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [4, []]


class TestLocalKeyType:
    """The keyring type of a local key, shared by validation and wiring."""

    def test_default_algorithm(self):
        """A signing key without an algorithm gets the purpose's default type."""
        assert local_key_type_of(KeyConfig("s", "local://s", "signing")) == "ecdsa-p384"

    def test_wrong_algorithm_names_the_field(self):
        """An algorithm the purpose does not take is blamed on `algorithm`."""
        kc = KeyConfig("e", "local://e", "envelope", "ed25519")
        with pytest.raises(ConfigError, match=r"^keys\.e\.algorithm: envelope keys take one of"):
            local_key_type_of(kc)
