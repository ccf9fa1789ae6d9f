import importlib

import pytest

import keybroker_client
import keybroker_client.compat as ecl_crypto_utility
from keybroker_client.compat import exceptions

# Every name the seed's README imports from the package root.
SEED_ROOT_NAMES = [
    "encrypt",
    "decrypt",
    "generate_key",
    "generate_rsa_key_pair",
    "rsa_encrypt",
    "rsa_decrypt",
    "generate_ecdsa_key_pair",
    "sign",
    "verify",
    "hash_password",
    "verify_password",
    "hash_data",
    "verify_data_integrity",
    "hmac_sign",
    "hmac_verify",
    "derive_key_hkdf",
    "derive_key_pbkdf2",
    "generate_token_bytes",
    "generate_token_hex",
    "generate_token_urlsafe",
    "EnvelopeEncryptor",
    "LocalKMSBackend",
    "DEKCache",
    "log_kms_operation",
]

# Names the seed's README imports from submodules, by module path under the package.
SEED_MODULE_NAMES = {
    "symmetric": ["generate_key", "encrypt", "decrypt"],
    "exceptions": ["DecryptionError", "InvalidParameterError", "HashingError"],
    "kms.base": ["KMSBackend"],
    "kms.aws": ["AWSKMSBackend"],
    "kms.gcp": ["GCPKMSBackend"],
    "kms.vault": ["VaultKMSBackend"],
}

# Seed exceptions that keybroker_client also has, under the same name.
SHARED_EXCEPTIONS = [
    "EncryptionError",
    "DecryptionError",
    "SigningError",
    "VerificationError",
    "HashingError",
    "KeyDerivationError",
    "TokenGenerationError",
    "KMSError",
    "KMSUnavailableError",
    "KMSAuthenticationError",
    "KMSKeyNotFoundError",
    "InvalidParameterError",
]


class TestCompatSurface:
    """The seed's names, importable after changing one import."""

    @pytest.mark.parametrize("name", SEED_ROOT_NAMES)
    def test_seed_root_names(self, name):
        """Each name the seed imports from its root is at the compat root."""
        assert name in ecl_crypto_utility.__all__
        assert getattr(ecl_crypto_utility, name) is not None

    @pytest.mark.parametrize(
        ("module", "name"),
        [(m, n) for m, names in SEED_MODULE_NAMES.items() for n in names],
    )
    def test_seed_module_paths(self, module, name):
        """ecl_crypto_utility.<module>.<name> exists as keybroker_client.compat.<module>.<name>."""
        imported = importlib.import_module(f"keybroker_client.compat.{module}")

        assert getattr(imported, name) is not None

    @pytest.mark.parametrize("name", SHARED_EXCEPTIONS)
    def test_exceptions_are_also_the_client_classes(self, name):
        """Each seed exception is a subclass of keybroker_client's class of that name."""
        cls = getattr(exceptions, name)

        assert getattr(ecl_crypto_utility, name) is cls
        assert issubclass(cls, getattr(keybroker_client, name))
        assert issubclass(cls, exceptions.ECLCryptoError)

    def test_root_encrypt_with_a_key_is_the_seeds_symmetric_format(self):
        """The root encrypt/decrypt with key= are the local AES-256-GCM functions."""
        key = ecl_crypto_utility.generate_key()
        text = ecl_crypto_utility.encrypt(plaintext=b"x", key=key)

        assert ecl_crypto_utility.symmetric.decrypt(encrypted_data=text, key=key) == b"x"

    @pytest.mark.parametrize(
        ("module", "name"),
        [
            ("symmetric", "envelope_encrypt"),
            ("symmetric", "envelope_decrypt"),
            ("asymmetric", "get_public_key"),
            ("asymmetric", "sign_with_key_id"),
            ("asymmetric", "verify_with_key_id"),
            ("asymmetric", "rsa_encrypt_with_key_id"),
            ("asymmetric", "rsa_decrypt_with_key_id"),
            ("hashing", "hmac_sign_with_key_id"),
            ("hashing", "hmac_verify_with_key_id"),
            ("kdf", "derive_key_hkdf_with_key_id"),
        ],
    )
    def test_broker_key_additions_remain(self, module, name):
        """The functions for keys the broker holds are still offered."""
        imported = importlib.import_module(f"keybroker_client.compat.{module}")

        assert callable(getattr(imported, name))

    def test_associated_data_without_a_key_is_refused(self):
        """Broker envelopes bind a context, not the seed's associated data: said clearly."""
        with pytest.raises(exceptions.InvalidParameterError, match="associated_data needs key="):
            ecl_crypto_utility.encrypt(plaintext=b"x", associated_data=b"a")
