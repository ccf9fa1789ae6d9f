import importlib

import pytest

import keybroker_client
import keybroker_client.compat as ecl_crypto_utility
from keybroker_client.compat import asymmetric, exceptions

SEED_EXCEPTIONS = [
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

SEED_FUNCTIONS = {
    "symmetric": ["generate_key", "encrypt", "decrypt", "envelope_encrypt", "envelope_decrypt"],
    "asymmetric": ["rsa_encrypt", "rsa_decrypt", "sign", "verify", "get_public_key"],
    "hashing": [
        "hash_password",
        "verify_password",
        "hash_data",
        "verify_data_integrity",
        "hmac_sign",
        "hmac_verify",
        "hmac_sign_with_key_id",
    ],
    "kdf": ["derive_key_hkdf", "derive_key_pbkdf2"],
    "tokens": ["generate_token_bytes", "generate_token_hex", "generate_token_urlsafe"],
}


class TestCompatSurface:
    """The seed's names, importable after changing one import."""

    @pytest.mark.parametrize("name", SEED_EXCEPTIONS)
    def test_exceptions_are_the_client_classes(self, name):
        """Each seed exception is keybroker_client's own class, not a copy."""
        cls = getattr(keybroker_client, name)

        assert getattr(ecl_crypto_utility, name) is cls
        assert getattr(exceptions, name) is cls
        assert issubclass(cls, keybroker_client.KeybrokerError)

    @pytest.mark.parametrize(
        ("module", "name"),
        [(m, f) for m, names in SEED_FUNCTIONS.items() for f in names],
    )
    def test_seed_functions_exist(self, module, name):
        """Every seed function is reachable as compat.<module>.<function>."""
        imported = importlib.import_module(f"keybroker_client.compat.{module}")

        assert callable(getattr(imported, name))
        assert getattr(ecl_crypto_utility, module) is imported

    def test_generate_keypair_explains_where_keys_live(self):
        """Asking for generate_keypair says keys are held by the broker and how to name one."""
        with pytest.raises(AttributeError, match="held by the broker"):
            _ = asymmetric.generate_keypair

    def test_unknown_attribute_is_a_plain_attribute_error(self):
        """Other missing names fail as usual."""
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            _ = asymmetric.nope

    def test_envelope_functions_are_the_facade(self):
        """compat.encrypt/decrypt are the seed-style envelope functions of keybroker_client."""
        assert ecl_crypto_utility.encrypt is keybroker_client.encrypt
        assert ecl_crypto_utility.decrypt is keybroker_client.decrypt
