"""Every row of the ecl_crypto_utility README's configuration and exception tables, checked.

Configuration (16 rows): each variable is read by the daemon (the configuration
`validated_config` builds, exactly what `serve` runs) and, where the application needs it
to find its key, by the compat layer, with the seed's meaning. Exceptions: symmetric (3
rows), asymmetric (5), KMS exception mapping (4), which exceptions to catch (10): each row's
failure is provoked and caught with the classes the row names.
"""

import base64

import pytest
from broker.config.validate import validated_config
from broker.errors import ConfigError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import keybroker_client
from keybroker_client.compat import (
    EnvelopeEncryptor,
    LocalKMSBackend,
    _autoconfig,
    _calls,
    asymmetric,
    decrypt,
    derive_key_hkdf,
    encrypt,
    exceptions,
    generate_key,
    hashing,
    sign,
    symmetric,
    tokens,
    verify,
)
from keybroker_client.compat.kms.aws import AWSKMSBackend

ARN = "arn:aws:kms:us-east-1:123456789012:key/abcd-1234"
GCP = {
    "ECL_CRYPTO_KMS_BACKEND": "gcp",
    "ECL_CRYPTO_KMS_KEY_ID": "my-crypto-key",
    "ECL_CRYPTO_GCP_PROJECT_ID": "my-project",
    "ECL_CRYPTO_GCP_LOCATION_ID": "us-east1",
    "ECL_CRYPTO_GCP_KEY_RING_ID": "my-keyring",
}
VAULT = {
    "ECL_CRYPTO_KMS_BACKEND": "vault",
    "ECL_CRYPTO_KMS_KEY_ID": "transit-key",
    "ECL_CRYPTO_VAULT_URL": "https://vault.example.com:8200",
}
AWS = {"ECL_CRYPTO_KMS_BACKEND": "aws", "ECL_CRYPTO_KMS_KEY_ID": ARN}
LOCAL = {"ECL_CRYPTO_KMS_BACKEND": "local", "ECL_CRYPTO_KMS_KEY_ID": "dev-key"}


def both(env):
    """(the daemon's configuration, the application's encryptor) for one environment."""
    return validated_config(env=env), _autoconfig.encryptor_from_env(env)


def app_uri(encryptor):
    """The backend key URI the application maps its key id to."""
    return encryptor.kms_backend.key_uri(encryptor.key_id)


class TestRequiredVariables:
    """ECL_CRYPTO_KMS_BACKEND and ECL_CRYPTO_KMS_KEY_ID."""

    @pytest.mark.parametrize(
        ("env", "scheme"),
        [
            (AWS, "aws-kms"),
            (GCP, "gcp-kms"),
            (VAULT, "vault-transit"),
            (LOCAL, "local"),
        ],
        ids=["aws", "gcp", "vault", "local"],
    )
    def test_kms_backend(self, env, scheme):
        """Each backend value selects that backend, in the daemon and in the application."""
        cfg, encryptor = both(env)

        assert cfg.keys["default"].uri.startswith(f"{scheme}://")
        assert app_uri(encryptor) == cfg.keys["default"].uri

    @pytest.mark.parametrize(
        "key_id", [ARN, "alias/my-app", "1234abcd-12ab-34cd-56ef-1234567890ab"]
    )
    def test_kms_key_id(self, key_id):
        """An ARN, alias or key id names the key the daemon serves as `default`."""
        cfg, encryptor = both({"ECL_CRYPTO_KMS_BACKEND": "aws", "ECL_CRYPTO_KMS_KEY_ID": key_id})

        assert cfg.keys["default"].uri == f"aws-kms://{key_id}" == app_uri(encryptor)


class TestBackendVariables:
    """The AWS (3 rows), GCP (3), Vault (4) and local (1) variables."""

    @pytest.mark.parametrize(
        ("variable", "value", "table", "field"),
        [
            ("ECL_CRYPTO_AWS_REGION", "us-east-1", "aws", "region"),
            ("ECL_CRYPTO_AWS_PROFILE", "ops", "aws", "profile"),
            ("ECL_CRYPTO_AWS_ENDPOINT_URL", "http://localhost:4566", "aws", "endpoint_url"),
            ("ECL_CRYPTO_VAULT_URL", "https://vault.example.com:8200", "vault", "address"),
            ("ECL_CRYPTO_VAULT_TOKEN", "hvs.token", "vault", "token"),
            ("ECL_CRYPTO_VAULT_NAMESPACE", "team-a", "vault", "namespace"),
        ],
    )
    def test_daemon_backend_setting(self, variable, value, table, field):
        """The variable sets the daemon's backend; the application keeps no credential."""
        base = VAULT if table == "vault" else AWS
        cfg, encryptor = both({**base, variable: value})

        assert cfg.backends[table][field] == value
        assert "hvs.token" not in repr(vars(encryptor.kms_backend))

    @pytest.mark.parametrize(
        "variable",
        ["ECL_CRYPTO_GCP_PROJECT_ID", "ECL_CRYPTO_GCP_LOCATION_ID", "ECL_CRYPTO_GCP_KEY_RING_ID"],
    )
    def test_gcp_key_ring(self, variable):
        """Each is part of the key's path on both sides, and required by both."""
        cfg, encryptor = both({**GCP, variable: "x1"})
        assert "/x1/" in cfg.keys["default"].uri
        assert app_uri(encryptor) == cfg.keys["default"].uri

        missing = {k: v for k, v in GCP.items() if k != variable}
        with pytest.raises(ConfigError, match=variable):
            validated_config(env=missing)
        with pytest.raises(exceptions.InvalidParameterError, match=variable):
            _autoconfig.encryptor_from_env(missing)

    def test_vault_mount_point(self):
        """Default `transit`; a mount point moves the key on both sides."""
        default_cfg, _ = both(VAULT)
        cfg, encryptor = both({**VAULT, "ECL_CRYPTO_VAULT_MOUNT_POINT": "kv"})

        assert default_cfg.keys["default"].uri == "vault-transit://transit/transit-key"
        assert cfg.keys["default"].uri == "vault-transit://kv/transit-key" == app_uri(encryptor)

    def test_local_master_key(self):
        """Hex of 32 bytes: the daemon's master key; absent, the daemon generates one."""
        key = "5a" * 32
        cfg, encryptor = both({**LOCAL, "ECL_CRYPTO_LOCAL_MASTER_KEY": key})

        assert cfg.local.master_key_hex == key
        assert encryptor.kms_backend._master_key == bytes.fromhex(key)
        assert validated_config(env=LOCAL).local.master_key_hex is None


class TestCacheVariables:
    """ECL_CRYPTO_DEK_CACHE_ENABLED, _MAX_SIZE, _TTL_SECONDS (3 rows)."""

    def test_enabled(self):
        """On by default on both sides; `false` turns both caches off."""
        on_cfg, on_app = both(LOCAL)
        off_cfg, off_app = both({**LOCAL, "ECL_CRYPTO_DEK_CACHE_ENABLED": "false"})

        assert (on_cfg.cache.enabled, on_app.dek_cache is not None) == (True, True)
        assert (off_cfg.cache.enabled, off_app.dek_cache) == (False, None)

    def test_max_size(self):
        """The application's default is 100; the variable sizes both caches."""
        cfg, encryptor = both({**LOCAL, "ECL_CRYPTO_DEK_CACHE_MAX_SIZE": "7"})

        assert _autoconfig.encryptor_from_env(LOCAL).dek_cache.max_size == 100
        assert (cfg.cache.decrypt_max_entries, encryptor.dek_cache.max_size) == (7, 7)

    def test_ttl_seconds(self):
        """Default 300 on both sides; the variable sets both."""
        default_cfg, default_app = both(LOCAL)
        cfg, encryptor = both({**LOCAL, "ECL_CRYPTO_DEK_CACHE_TTL_SECONDS": "45"})

        assert (default_cfg.cache.encrypt_max_age_seconds, default_app.dek_cache.ttl_seconds) == (
            300,
            300,
        )
        assert (cfg.cache.decrypt_ttl_seconds, encryptor.dek_cache.ttl_seconds) == (45, 45)


@pytest.fixture
def broker(seed_daemon_socket, use_broker):
    """The compat layer pointed at the README daemon."""
    use_broker(seed_daemon_socket)


def fails_with(function, *classes):
    """Call function; it must raise an instance of every class given (the row's catch list)."""
    with pytest.raises(exceptions.ECLCryptoError) as caught:
        function()
    for cls in classes:
        assert isinstance(caught.value, cls), (type(caught.value), cls)
    return caught.value


def refusing(*_args, **_kwargs):
    """A primitive that refuses, to provoke the rare failures."""
    raise ValueError("refused")


def failing_random(_length):
    """An OS random source that fails."""
    raise OSError("getrandom failed")


class RefusingAead:
    """AES-GCM refusing to encrypt, as pyca does over 2**36 bytes."""

    def __init__(self, key):
        """Any key."""
        self.key = key

    def encrypt(self, *_args):
        """Refuse."""
        raise OverflowError("Data or associated data too long")


def flip_last_byte(text):
    """The base64 text with the last byte of what it encodes changed."""
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 1
    return base64.b64encode(bytes(raw)).decode()


class TestSymmetricAndAsymmetricExceptions:
    """The symmetric (3 rows) and asymmetric (5 rows) exception tables."""

    def test_symmetric(self, monkeypatch):
        """Key not 32 bytes; encryption failing; wrong key, corrupted data or AAD mismatch."""
        key = generate_key()
        text = encrypt(plaintext=b"x", key=key, associated_data=b"a")
        fails_with(lambda: encrypt(plaintext=b"x", key=key[:31]), exceptions.InvalidParameterError)
        for bad in (
            {"key": generate_key()},
            {"encrypted_data": "A" + text[1:]},
            {"associated_data": b"b"},
        ):
            arguments = {"encrypted_data": text, "key": key, "associated_data": b"a", **bad}
            fails_with(lambda a=arguments: decrypt(**a), exceptions.DecryptionError)
        monkeypatch.setattr(symmetric, "AESGCM", RefusingAead)
        fails_with(lambda: encrypt(plaintext=b"x", key=key), exceptions.EncryptionError)

    def test_asymmetric(self, monkeypatch):
        """Generation, RSA encryption and decryption, signing and verification failures."""
        rsa_private, rsa_public = asymmetric.generate_rsa_key_pair()
        ec_private, _ = asymmetric.generate_ecdsa_key_pair()
        _, other_public = asymmetric.generate_ecdsa_key_pair()
        text = asymmetric.rsa_encrypt(b"x", rsa_public)
        fails_with(
            lambda: asymmetric.rsa_encrypt(b"x" * 447, rsa_public), exceptions.EncryptionError
        )
        fails_with(
            lambda: asymmetric.rsa_decrypt(flip_last_byte(text), rsa_private),
            exceptions.DecryptionError,
        )
        signature = sign(b"doc", ec_private)
        fails_with(lambda: verify(b"doc", signature, other_public), exceptions.VerificationError)
        monkeypatch.setattr(asymmetric.ec, "ECDSA", refusing)
        fails_with(lambda: sign(b"doc", ec_private), exceptions.SigningError)
        monkeypatch.setattr(asymmetric.ec, "generate_private_key", refusing)
        fails_with(asymmetric.generate_ecdsa_key_pair, exceptions.KeyGenerationError)


class TestKmsExceptionMapping:
    """NotFound, AccessDenied, unavailable, missing SDK (4 rows)."""

    @pytest.mark.usefixtures("broker")
    def test_not_found(self):
        """A key the KMS (here: the broker) does not have is KMSKeyNotFoundError."""
        encryptor = EnvelopeEncryptor(
            kms_backend=AWSKMSBackend(), key_id=ARN.replace("abcd", "ffff")
        )

        fails_with(lambda: encryptor.encrypt(b"x"), exceptions.KMSKeyNotFoundError)

    def test_access_denied(self):
        """A refusal (the broker's PERMISSION_DENIED) is KMSAuthenticationError."""
        with (
            pytest.raises(exceptions.KMSAuthenticationError),
            _calls.broker_call(exceptions.KMSError),
        ):
            raise keybroker_client.PermissionDeniedError(
                "permission denied", reason="PERMISSION_DENIED"
            )

    def test_unavailable(self, use_broker, tmp_path):
        """An unreachable broker is KMSUnavailableError."""
        use_broker(tmp_path / "no-daemon.sock")

        fails_with(
            lambda: EnvelopeEncryptor(LocalKMSBackend(), "dev-key").encrypt(b"x"),
            exceptions.KMSUnavailableError,
        )

    def test_missing_sdk(self):
        """A backend this package cannot serve is UnsupportedBackendError (no SDK is needed)."""
        fails_with(
            lambda: _autoconfig.encryptor_from_env({"ECL_CRYPTO_KMS_BACKEND": "azure"}),
            exceptions.UnsupportedBackendError,
        )


class TestWhichExceptionsToCatch:
    """The ten scenarios, each caught with the classes the table lists."""

    @pytest.mark.usefixtures("broker")
    def test_any_operation_and_hashing(self):
        """Any failure is an ECLCryptoError; password, digest and HMAC mismatches HashingError."""
        stored = hashing.hash_password("pw")
        fails_with(lambda: hashing.verify_password("other", stored), exceptions.HashingError)
        fails_with(lambda: hashing.verify_data_integrity(b"x", "00" * 32), exceptions.HashingError)
        fails_with(lambda: hashing.hmac_verify(b"x", b"k", "00" * 32), exceptions.HashingError)

    def test_symmetric_rsa_ecdsa(self):
        """Symmetric, RSA and ECDSA failures raise the classes the table lists for them."""
        fails_with(lambda: encrypt(b"x", key=b"short"), exceptions.InvalidParameterError)
        fails_with(lambda: decrypt("AAAA", key=bytes(32)), exceptions.DecryptionError)
        _, public = asymmetric.generate_ecdsa_key_pair()
        fails_with(lambda: verify(b"x", "AAAA", public), exceptions.VerificationError)
        private_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_pem = (
            serialization.load_pem_private_key(private_pem, None)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        fails_with(
            lambda: asymmetric.rsa_encrypt(b"x" * 300, public_pem), exceptions.EncryptionError
        )
        fails_with(lambda: asymmetric.rsa_decrypt("AAAA", private_pem), exceptions.DecryptionError)

    def test_key_derivation_and_tokens(self, monkeypatch):
        """KeyDerivationError and TokenGenerationError."""
        fails_with(
            lambda: derive_key_hkdf(b"m", length=255 * 32 + 1), exceptions.KeyDerivationError
        )
        monkeypatch.setattr(tokens.secrets, "token_bytes", failing_random)
        fails_with(tokens.generate_token_bytes, exceptions.TokenGenerationError)

    @pytest.mark.usefixtures("broker")
    def test_envelope(self):
        """A malformed envelope is EnvelopeError; an unknown key is a KMSError."""
        encryptor = EnvelopeEncryptor(kms_backend=LocalKMSBackend(), key_id="dev-key")
        fails_with(
            lambda: encryptor.decrypt(envelope_data="bm90IGFuIGVudmVsb3Bl"),
            exceptions.EnvelopeError,
        )
        envelope = encryptor.encrypt(plaintext=b"x")
        fails_with(
            lambda: encryptor.decrypt(envelope_data=flip_last_byte(envelope)),
            exceptions.EnvelopeError,
        )
        unknown = EnvelopeEncryptor(kms_backend=LocalKMSBackend(), key_id="unknown")
        fails_with(lambda: unknown.encrypt(b"x"), exceptions.KMSError)

    def test_backend_instantiation(self):
        """An unsupported backend is UnsupportedBackendError."""
        fails_with(
            lambda: _autoconfig.encryptor_from_env({"ECL_CRYPTO_KMS_BACKEND": "hsm"}),
            exceptions.UnsupportedBackendError,
        )

    @pytest.mark.usefixtures("broker")
    def test_retryable_or_not(self, use_broker, tmp_path):
        """Unreachable: KMSUnavailableError (retry). Unknown key: not a KMSUnavailableError."""
        not_found = fails_with(
            lambda: EnvelopeEncryptor(LocalKMSBackend(), "unknown").encrypt(b"x"),
            exceptions.KMSKeyNotFoundError,
        )
        assert not isinstance(not_found, exceptions.KMSUnavailableError)
        use_broker(tmp_path / "no-daemon.sock")
        fails_with(
            lambda: EnvelopeEncryptor(LocalKMSBackend(), "dev-key").encrypt(b"x"),
            exceptions.KMSUnavailableError,
        )
