from __future__ import annotations

import re

import pytest
from unit.services.fakes import CALLER

from broker.errors import DECRYPTION_FAILED_MESSAGE, DecryptionFailedError, InvalidRequestError
from broker.services.asymmetric import AsymmetricService, Decrypted


@pytest.fixture
def rsa(ops) -> AsymmetricService:
    """The RSA-OAEP service over the shared fakes."""
    return AsymmetricService(ops)


class TestAsymmetricService:
    """AsymmetricService: encrypt with the public half here, decrypt in the backend."""

    async def test_round_trip(self, rsa):
        """What is encrypted to the key decrypts with it, naming the version."""
        encrypted = await rsa.encrypt(CALLER, "rsa", b"wrap me")
        assert (len(encrypted.ciphertext), encrypted.key_version) == (256, 1)
        assert await rsa.decrypt(CALLER, "rsa", encrypted.ciphertext) == Decrypted(
            b"wrap me", "rsa", 1
        )

    async def test_encryption_needs_only_the_public_key(self, rsa, fakes):
        """Encrypting asks the backend for the public key and nothing else."""
        await rsa.encrypt(CALLER, "rsa", b"m")
        assert dict(fakes.rsa.calls) == {"public_key": 1}

    async def test_label_is_bound(self, rsa):
        """A ciphertext made with a label decrypts only with that label."""
        encrypted = await rsa.encrypt(CALLER, "rsa", b"m", b"invoice")
        assert (
            await rsa.decrypt(CALLER, "rsa", encrypted.ciphertext, b"invoice")
        ).plaintext == b"m"
        with pytest.raises(DecryptionFailedError) as caught:
            await rsa.decrypt(CALLER, "rsa", encrypted.ciphertext, b"receipt")
        assert caught.value.message == DECRYPTION_FAILED_MESSAGE

    async def test_tampered_ciphertext_fails(self, rsa):
        """A flipped bit is the one fixed decryption error."""
        ciphertext = bytearray((await rsa.encrypt(CALLER, "rsa", b"m")).ciphertext)
        ciphertext[10] ^= 1
        with pytest.raises(DecryptionFailedError):
            await rsa.decrypt(CALLER, "rsa", bytes(ciphertext))

    async def test_plaintext_over_the_oaep_limit(self, rsa, fakes):
        """A plaintext the key size cannot take is InvalidRequest naming the limit."""
        with pytest.raises(InvalidRequestError) as caught:
            await rsa.encrypt(CALLER, "rsa", bytes(191))
        assert (
            caught.value.message == "plaintext is 191 bytes; RSA-2048-OAEP-SHA256 takes at most 190"
        )
        assert fakes.audit.errors() == [InvalidRequestError]

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda s: s.encrypt(CALLER, "rsa", bytes(257)), "(server.max_plaintext_bytes)"),
            (
                lambda s: s.encrypt(CALLER, "rsa", b"m", bytes(1025)),
                "label is longer than 1024 bytes",
            ),
            (
                lambda s: s.decrypt(CALLER, "rsa", bytes(1025)),
                "ciphertext is longer than 1024 bytes",
            ),
        ],
    )
    async def test_oversize_inputs_are_refused_before_the_backend(self, rsa, fakes, call, message):
        """Oversize plaintext, label or ciphertext is InvalidRequest naming the bound."""
        with pytest.raises(InvalidRequestError, match=re.escape(message)):
            await call(rsa)
        assert fakes.kms_calls() == 0

    async def test_rotation(self, rsa, fakes):
        """After rotation new ciphertexts use version 2; old ones decrypt with version 1 named."""
        old = await rsa.encrypt(CALLER, "rsa", b"old")
        await fakes.rsa.rotate_key("kek-rsa")
        assert (await rsa.encrypt(CALLER, "rsa", b"new")).key_version == 2
        assert (await rsa.decrypt(CALLER, "rsa", old.ciphertext, key_version=1)).plaintext == b"old"
        with pytest.raises(DecryptionFailedError):
            await rsa.decrypt(CALLER, "rsa", old.ciphertext)
