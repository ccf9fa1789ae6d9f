"""AsyncClient's signing, RSA, hashing, derivation and token calls against the fakes."""

import hashlib
import inspect

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

import keybroker_client as kb
from keybroker_client._aio_ops import AsyncClientOperations
from keybroker_client._client_ops import ClientOperations

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
PUBLIC = sorted(n for n in vars(ClientOperations) if not n.startswith("_"))


class TestParity:
    """The async client offers exactly the sync client's operations."""

    def test_same_public_methods(self):
        """Every operation exists on both, and nothing extra on either."""
        async_names = sorted(n for n in vars(AsyncClientOperations) if not n.startswith("_"))

        assert async_names == PUBLIC

    @pytest.mark.parametrize("name", PUBLIC)
    def test_same_signature(self, name):
        """Parameter names, kinds and defaults match, and the async one is a coroutine."""
        sync = inspect.signature(getattr(kb.Client, name))
        async_ = inspect.signature(getattr(kb.AsyncClient, name))

        assert [(p.name, p.kind, p.default) for p in sync.parameters.values()] == [
            (p.name, p.kind, p.default) for p in async_.parameters.values()
        ]
        assert inspect.iscoroutinefunction(getattr(kb.AsyncClient, name))


class TestAsyncOperations:
    """Round trips and error mapping through AsyncClient."""

    async def test_sign_verify_and_tamper(self, ops):
        """Sign, verify, and a bad signature raises VerificationError."""
        async with kb.AsyncClient(ops.socket) as client:
            signature = await client.sign(b"doc", key="signing")
            assert await client.verify(b"doc", signature, key="signing") is True
            with pytest.raises(kb.VerificationError):
                await client.verify(b"other", signature, key="signing")
            batch = await client.verify_batch([(b"doc", signature)], key="signing")
            assert batch == [True]

    async def test_rsa_encrypt_is_offline_after_one_fetch(self, ops):
        """One GetPublicKey call, no AsymmetricEncrypt, and the broker decrypts."""
        ops.signing.public_key_calls.clear()
        ops.asymmetric.encrypt_calls.clear()
        async with kb.AsyncClient(ops.socket) as client:
            first = await client.rsa_encrypt(b"a", key="rsa")
            second = await client.rsa_encrypt(b"b", key="rsa")
            assert await client.rsa_decrypt(second, key="rsa") == b"b"

        assert ops.signing.public_key_calls == ["rsa"]
        assert ops.asymmetric.encrypt_calls == []
        assert ops.rsa_key.decrypt(first, OAEP) == b"a"

    async def test_rotate_key_refetches_the_public_key(self, ops):
        """After rotate_key the async client asks for the public key again."""
        ops.signing.public_key_calls.clear()
        async with kb.AsyncClient(ops.socket) as client:
            await client.rsa_encrypt(b"a", key="rsa")
            with pytest.raises(kb.UnsupportedOperationError):  # the fakes have no KeyAdmin
                await client.rotate_key("rsa")
            await client.rsa_encrypt(b"b", key="rsa")
            assert (
                await client.rsa_decrypt(
                    await client.rsa_encrypt(b"c", key="rsa"), key="rsa", key_version=1
                )
                == b"c"
            )

        assert ops.signing.public_key_calls == ["rsa", "rsa"]

    async def test_rsa_encrypt_with_signing_key_is_refused(self, ops):
        """A signing key goes to the broker, which refuses it."""
        async with kb.AsyncClient(ops.socket) as client:
            with pytest.raises(kb.KeyStateError):
                await client.rsa_encrypt(b"x", key="signing")

    async def test_hashing_calls(self, ops):
        """Passwords, digests, HMACs and blind indexes work from asyncio."""
        async with kb.AsyncClient(ops.socket) as client:
            stored = await client.hash_password("pw")
            assert await client.verify_password("pw", stored) is True
            with pytest.raises(kb.VerificationError):
                await client.verify_password("nope", stored)
            assert await client.digest(b"abc") == hashlib.sha256(b"abc").hexdigest()
            assert await client.verify_digest(b"abc", hashlib.sha256(b"abc").hexdigest())
            mac = await client.hmac(b"m", key="hmac")
            assert await client.hmac_verify(b"m", mac, key="hmac") is True
            assert (await client.hmac_batch([b"m"], key="hmac")) == [mac]
            index = await client.blind_index(b"v", key="hmac", field="f", tenant="t")
            batch = await client.blind_index_batch([b"v"], key="hmac", field="f", tenant="t")
            assert batch == [index]

    async def test_derivation_and_tokens(self, ops):
        """derive_key, derive_key_pbkdf2 and token work from asyncio."""
        async with kb.AsyncClient(ops.socket) as client:
            assert len(await client.derive_key(key="derive", length=16)) == 16
            key, salt = await client.derive_key_pbkdf2("pw", salt=b"s" * 16)
            assert (len(key), salt) == (32, b"s" * 16)
            assert await client.token(16, encoding="bytes") == bytes(range(16))
            with pytest.raises(kb.InvalidParameterError):
                await client.token(8)

    async def test_unknown_key(self, ops):
        """An unknown key raises KMSKeyNotFoundError from the async client too."""
        async with kb.AsyncClient(ops.socket) as client:
            with pytest.raises(kb.KMSKeyNotFoundError):
                await client.hmac(b"x", key="missing")
