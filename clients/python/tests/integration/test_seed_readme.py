# ruff: noqa: E501 - the README's code blocks are copied as the seed shows them, long lines included
"""The ecl_crypto_utility README, block by block: installing, configuring and the crypto functions.

The README has 38 code blocks. Each is copied below as the README shows it; the `run_block`
fixture (integration/conftest.py) changes only its `import` lines, from `ecl_crypto_utility`
to `keybroker_client.compat`, which is all a migrating user changes. Python blocks run;
shell blocks that set variables configure the daemon and the application; `pip install`
blocks are checked to need no KMS SDK in the application; the wire-format block is checked
byte by byte. Blocks are numbered in README order: these 22 (B01-B19, and the backend
`pip install` blocks B26, B28, B30) are here, the other 16 (envelopes, KMS backends, cache,
audit, exceptions) in test_seed_readme_envelopes.py.
"""

import base64
import re
import subprocess
import sys

import pytest
from broker.config.validate import describe_keys, validated_config
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keybroker_client.compat import _autoconfig, exceptions

B01 = """\
# Core package
pip install ecl_crypto_utility

# With AWS KMS support
pip install "ecl_crypto_utility[aws]"

# With GCP Cloud KMS support
pip install "ecl_crypto_utility[gcp]"

# With HashiCorp Vault support
pip install "ecl_crypto_utility[vault]"

# All KMS backends
pip install "ecl_crypto_utility[all]"

# Development dependencies
pip install "ecl_crypto_utility[dev]"
"""

B02 = """\
export ECL_CRYPTO_KMS_BACKEND=local       # or: aws, gcp, vault
export ECL_CRYPTO_KMS_KEY_ID=my-app-key
"""

B03 = """\
from ecl_crypto_utility import encrypt, decrypt

ciphertext = encrypt(plaintext=b"Hello, World!")
plaintext = decrypt(encrypted_data=ciphertext)
assert plaintext == b"Hello, World!"
"""

B04 = """\
from ecl_crypto_utility.symmetric import generate_key, encrypt, decrypt

key = generate_key()
ciphertext = encrypt(plaintext=b"Hello, World!", key=key)
plaintext = decrypt(encrypted_data=ciphertext, key=key)
"""

B05 = """\
ECL_CRYPTO_KMS_BACKEND=aws
ECL_CRYPTO_KMS_KEY_ID=arn:aws:kms:us-east-1:123456789012:key/abcd-1234
ECL_CRYPTO_AWS_REGION=us-east-1
"""

B06 = """\
ECL_CRYPTO_KMS_BACKEND=gcp
ECL_CRYPTO_KMS_KEY_ID=my-crypto-key
ECL_CRYPTO_GCP_PROJECT_ID=my-project
ECL_CRYPTO_GCP_LOCATION_ID=us-east1
ECL_CRYPTO_GCP_KEY_RING_ID=my-keyring
"""

B07 = """\
ECL_CRYPTO_KMS_BACKEND=vault
ECL_CRYPTO_KMS_KEY_ID=my-transit-key
ECL_CRYPTO_VAULT_URL=https://vault.example.com:8200
ECL_CRYPTO_VAULT_TOKEN=hvs.my-vault-token
"""

B08 = """\
ECL_CRYPTO_KMS_BACKEND=local
ECL_CRYPTO_KMS_KEY_ID=dev-key
"""

B09 = """\
from ecl_crypto_utility import generate_key, encrypt, decrypt

key = generate_key()
ciphertext = encrypt(plaintext=b"hello, world", key=key)
plaintext = decrypt(encrypted_data=ciphertext, key=key)
"""

B10 = """\
context = b"user_id=42"
ciphertext = encrypt(plaintext=b"payment details", key=key, associated_data=context)
plaintext = decrypt(encrypted_data=ciphertext, key=key, associated_data=context)
"""

B11 = """\
nonce (12 bytes) || ciphertext (variable) || authentication tag (16 bytes)
"""

B12 = """\
from ecl_crypto_utility import generate_rsa_key_pair, rsa_encrypt, rsa_decrypt

private_key, public_key = generate_rsa_key_pair()
ciphertext = rsa_encrypt(plaintext=b"secret message", public_key_pem=public_key)
plaintext = rsa_decrypt(encrypted_data=ciphertext, private_key_pem=private_key)
"""

B13 = """\
from ecl_crypto_utility import generate_ecdsa_key_pair, sign, verify

private_key, public_key = generate_ecdsa_key_pair()
signature = sign(data=b"important document", private_key_pem=private_key)
verify(data=b"important document", signature=signature, public_key_pem=public_key)
"""

B14 = """\
from ecl_crypto_utility import hash_password, verify_password
from ecl_crypto_utility.exceptions import HashingError

hashed = hash_password(password="my_secure_password")
try:
    verify_password(password="my_secure_password", hash_string=hashed)
    print("Password matches")
except HashingError:
    print("Password does not match")
"""

B15 = """\
from ecl_crypto_utility import hash_data, verify_data_integrity

digest = hash_data(data=b"important document")
verify_data_integrity(data=b"important document", expected_hash=digest)
"""

B16 = """\
from ecl_crypto_utility import generate_key, hmac_sign, hmac_verify

key = generate_key()
mac = hmac_sign(data=b"api request payload", key=key)
hmac_verify(data=b"api request payload", key=key, expected_hmac=mac)
"""

B17 = """\
from ecl_crypto_utility import generate_key, derive_key_hkdf

master_secret = generate_key()
derived = derive_key_hkdf(
    input_key_material=master_secret,
    length=32,
    salt=b"static-application-salt",
    info=b"encryption-key-v1",
)
"""

B18 = """\
from ecl_crypto_utility import derive_key_pbkdf2

derived_key, salt = derive_key_pbkdf2(passphrase="user-chosen-password")
# IMPORTANT: Store the salt alongside the derived key.
# To re-derive later:
rederived_key, _ = derive_key_pbkdf2(passphrase="user-chosen-password", salt=salt)
assert rederived_key == derived_key
"""

B19 = """\
from ecl_crypto_utility import generate_token_hex, generate_token_urlsafe

api_key = generate_token_hex(length=32)       # 64-char hex string
reset_token = generate_token_urlsafe(length=32)  # ~43-char URL-safe string
"""

B26 = """\
pip install "ecl_crypto_utility[aws]"
"""

B28 = """\
pip install "ecl_crypto_utility[gcp]"
"""

B30 = """\
pip install "ecl_crypto_utility[vault]"
"""


def variables(block):
    """NAME=VALUE pairs of an `export` or `.env` block, without comments."""
    pairs = {}
    for raw in block.splitlines():
        line = raw.split("#", 1)[0].strip().removeprefix("export ").strip()
        if line:
            name, value = line.split("=", 1)
            pairs[name] = value
    return pairs


class TestMigrateImports:
    """The transformation the tests apply is only the import lines."""

    def test_only_import_lines_change(self, migrate):
        """Every other line, logger names included, stays byte for byte."""
        code = 'from ecl_crypto_utility.kms.aws import X\nlogging.getLogger("ecl_crypto_utility.audit")\n'

        assert migrate(code) == (
            'from keybroker_client.compat.kms.aws import X\nlogging.getLogger("ecl_crypto_utility.audit")\n'
        )


class TestInstallation:
    """B01, B26, B28, B30: the application needs no KMS SDK, whichever extra it installed."""

    def test_backends_work_without_sdks(self):
        """With boto3, google-cloud-kms and hvac unimportable, every backend still builds."""
        for block in (B01, B26, B28, B30):
            assert "pip install" in block
        code = (
            "import sys\n"
            "for sdk in ('boto3', 'botocore', 'google.cloud', 'hvac'):\n"
            "    sys.modules[sdk] = None\n"
            "from keybroker_client.compat.kms.aws import AWSKMSBackend\n"
            "from keybroker_client.compat.kms.gcp import GCPKMSBackend\n"
            "from keybroker_client.compat.kms.vault import VaultKMSBackend\n"
            "AWSKMSBackend(region_name='us-east-1')\n"
            "GCPKMSBackend(project_id='p', location_id='l', key_ring_id='r')\n"
            "VaultKMSBackend(vault_url='https://vault.example.com:8200')\n"
        )

        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )

        assert result.returncode == 0, result.stderr


class TestQuickStart:
    """B02, B03, B04: two variables, then encrypt and decrypt."""

    def test_two_variables_configure_daemon_and_application(
        self, quickstart_daemon_socket, use_broker, run_block
    ):
        """The daemon started with B02's variables serves B03, run with the same variables."""
        use_broker(quickstart_daemon_socket, **variables(B02))

        namespace = run_block(B03)

        raw = base64.b64decode(namespace["ciphertext"])
        assert raw[0] == 0x01
        assert raw[4 : 4 + raw[3]] == b"default"

    def test_direct_symmetric(self, run_block):
        """B04 runs locally with a caller-held key."""
        assert run_block(B04)["plaintext"] == b"Hello, World!"


class TestEnvFiles:
    """B05-B08: each .env file configures the daemon and the application for the same key."""

    @pytest.mark.parametrize(
        ("block", "uri", "backend"),
        [
            (
                B05,
                "aws-kms://arn:aws:kms:us-east-1:123456789012:key/abcd-1234",
                "aws: region=us-east-1",
            ),
            (
                B06,
                "gcp-kms://projects/my-project/locations/us-east1/keyRings/my-keyring/cryptoKeys/my-crypto-key",
                "gcp",
            ),
            (
                B07,
                "vault-transit://transit/my-transit-key",
                "vault: address=https://vault.example.com:8200",
            ),
            (B08, "local://dev-key", "local"),
        ],
        ids=["B05-aws", "B06-gcp", "B07-vault", "B08-local"],
    )
    def test_env_file(self, block, uri, backend):
        """The daemon serves the seed's key as `default`; the application maps to that URI."""
        env = variables(block)

        cfg = validated_config(env=env)
        encryptor = _autoconfig.encryptor_from_env(env)

        assert describe_keys(cfg) == [f"key default: envelope, {uri} (backend {backend})"]
        assert encryptor.kms_backend.key_uri(encryptor.key_id) == uri


class TestSymmetric:
    """B09, B10, B11: AES-256-GCM with a caller-held key, with AAD, in the seed's wire format."""

    def test_usage_and_associated_data(self, run_block):
        """B09 then B10 in one namespace; a missing or other AAD raises DecryptionError."""
        namespace = run_block(B09)
        assert namespace["plaintext"] == b"hello, world"

        run_block(B10, namespace)

        assert namespace["plaintext"] == b"payment details"
        decrypt, key, ciphertext = namespace["decrypt"], namespace["key"], namespace["ciphertext"]
        for other in (None, b"user_id=43"):
            with pytest.raises(exceptions.DecryptionError):
                decrypt(encrypted_data=ciphertext, key=key, associated_data=other)

    def test_wire_format(self, run_block):
        """B11: base64 of nonce (12 bytes) || ciphertext || tag (16 bytes), opened by pyca."""
        assert B11.split() == [
            "nonce",
            "(12",
            "bytes)",
            "||",
            "ciphertext",
            "(variable)",
            "||",
            "authentication",
            "tag",
            "(16",
            "bytes)",
        ]
        namespace = run_block(B09)

        raw = base64.b64decode(namespace["ciphertext"], validate=True)

        assert len(raw) == 12 + len(b"hello, world") + 16
        assert AESGCM(namespace["key"]).decrypt(raw[:12], raw[12:], None) == b"hello, world"


class TestAsymmetric:
    """B12, B13: RSA-OAEP and ECDSA on PEM key pairs the application holds."""

    def test_rsa(self, run_block):
        """B12 round-trips the message."""
        assert run_block(B12)["plaintext"] == b"secret message"

    def test_ecdsa(self, run_block):
        """B13 verifies; verify returns True."""
        namespace = run_block(B13)

        verify = namespace["verify"]
        assert (
            verify(
                data=b"important document",
                signature=namespace["signature"],
                public_key_pem=namespace["public_key"],
            )
            is True
        )


class TestHashing:
    """B14, B15, B16: passwords in the broker, digests and HMACs locally."""

    def test_password(self, run_block, seed_daemon_socket, use_broker, capsys):
        """B14 prints that the password matches."""
        use_broker(seed_daemon_socket)

        run_block(B14)

        assert capsys.readouterr().out == "Password matches\n"

    def test_digest_and_hmac(self, run_block):
        """B15 and B16 verify what they made."""
        assert len(run_block(B15)["digest"]) == 64
        assert len(run_block(B16)["mac"]) == 64


class TestKeyDerivationAndTokens:
    """B17, B18, B19."""

    def test_hkdf(self, run_block):
        """B17 derives 32 bytes."""
        assert len(run_block(B17)["derived"]) == 32

    def test_pbkdf2(self, run_block):
        """B18 re-derives the same key from the returned salt (its own assert)."""
        assert len(run_block(B18)["salt"]) == 32

    def test_tokens(self, run_block):
        """B19: 64 hex characters and 43 URL-safe characters."""
        namespace = run_block(B19)

        assert re.fullmatch(r"[0-9a-f]{64}", namespace["api_key"])
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", namespace["reset_token"])
