"""VaultTransitBackend as a SigningBackend and MacBackend against a real OpenBao.

The backend logs in with a token holding only the policy docs/operations-crypto.md gives for
signing and HMAC keys (plus rotation, which the tests use through the backend).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from typing import TYPE_CHECKING

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from integration.kms.openbao import OpenBaoServer

from broker.errors import (
    InvalidRequestError,
    KeyStateError,
    KmsAuthenticationError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.kms.base import DecryptionBackend, MacBackend, SecretBackend, SigningBackend
from broker.kms.resilience import ResilienceSettings
from broker.kms.resilient_ops import resilient
from broker.kms.vault import VaultSettings, VaultTransitBackend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# The policy documented for delegated signing and HMAC keys, plus rotation and version config.
SIGNING_POLICY = """
path "transit/keys/*" { capabilities = ["read"] }
path "transit/sign/*" { capabilities = ["update"] }
path "transit/verify/*" { capabilities = ["update"] }
path "transit/hmac/*" { capabilities = ["update"] }
path "transit/keys/+/rotate" { capabilities = ["update"] }
path "transit/keys/+/config" { capabilities = ["update"] }
"""
# transit type -> (broker algorithm, hash for a third-party verifier, or None for Ed25519)
TYPES = {
    "ecdsa-p384": ("ecdsa-p384-sha384", hashes.SHA384),
    "ecdsa-p256": ("ecdsa-p256-sha256", hashes.SHA256),
    "ed25519": ("ed25519", None),
    "rsa-3072": ("rsa-pss-3072-sha256", hashes.SHA256),
}


@pytest.fixture(scope="module")
def openbao() -> Iterator[OpenBaoServer]:
    """One OpenBao dev server with the signing policy."""
    with OpenBaoServer() as server:
        server.write_policy("signing", SIGNING_POLICY)
        yield server


@pytest.fixture
async def backend(openbao: OpenBaoServer) -> AsyncIterator[VaultTransitBackend]:
    """A backend holding only the signing policy."""
    token = openbao.mint_token(policies=["signing"])
    transit = VaultTransitBackend(VaultSettings(address=openbao.url, token=token))
    yield transit
    await transit.close()


def new_key(openbao: OpenBaoServer, key_type: str, **options: object) -> str:
    """A fresh transit key of a type; MOUNT/NAME."""
    name = f"s-{uuid.uuid4().hex[:12]}"
    return openbao.create_key(name, key_type=key_type, **options)  # type: ignore[arg-type]


def third_party_verify(
    pem: str, hash_class: type[hashes.HashAlgorithm] | None, signature: bytes, message: bytes
) -> None:
    """Verify with pyca alone, as the broker's local keys' signatures are verified."""
    public = serialization.load_pem_public_key(pem.encode())
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, message)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        assert hash_class is not None
        public.verify(signature, message, ec.ECDSA(hash_class()))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        assert hash_class is not None
        pss = padding.PSS(mgf=padding.MGF1(hash_class()), salt_length=32)
        public.verify(signature, message, pss, hash_class())


@pytest.mark.parametrize("key_type", list(TYPES))
class TestSignEveryType:
    """Transit signatures are the bytes a local key of the same algorithm makes."""

    async def test_signature_verifies_outside_the_broker(self, openbao, backend, key_type):
        """Raw DER/PSS/Ed25519 bytes check with pyca and the served PEM."""
        algorithm, hash_class = TYPES[key_type]
        key_id = new_key(openbao, key_type)
        signed = await backend.sign(key_id, b"invoice 42", prehashed=False)
        info = await backend.public_key(key_id, 0)
        assert (signed.key_version, info.key_version) == (1, 1)
        assert signed.algorithm == info.algorithm == algorithm
        assert not signed.signature.startswith(b"vault:")
        third_party_verify(info.pem, hash_class, signed.signature, b"invoice 42")
        with pytest.raises(InvalidSignature):
            third_party_verify(info.pem, hash_class, signed.signature, b"invoice 43")

    async def test_verify_and_tampering(self, openbao, backend, key_type):
        """Vault verifies its signature; a flipped bit or another message fails."""
        key_id = new_key(openbao, key_type)
        signature = (await backend.sign(key_id, b"m", prehashed=False)).signature
        assert await backend.verify(key_id, 0, b"m", signature, prehashed=False) == 1
        assert await backend.verify(key_id, 1, b"m", signature, prehashed=False) == 1
        flipped = signature[:-1] + bytes([signature[-1] ^ 1])
        for message, candidate in ((b"m", flipped), (b"n", signature), (b"m", b"")):
            with pytest.raises(VerificationFailedError):
                await backend.verify(key_id, 0, message, candidate, prehashed=False)


class TestDigests:
    """Prehashed input: Vault signs any bytes, so the broker checks them first."""

    async def test_digest_signature_verifies_outside(self, openbao, backend):
        """A signed SHA-384 digest checks as a signature over the message."""
        key_id = new_key(openbao, "ecdsa-p384")
        digest = hashlib.sha384(b"doc").digest()
        signed = await backend.sign(key_id, digest, prehashed=True)
        pem = (await backend.public_key(key_id, 0)).pem
        third_party_verify(pem, hashes.SHA384, signed.signature, b"doc")
        public = serialization.load_pem_public_key(pem.encode())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signed.signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
        assert await backend.verify(key_id, 0, digest, signed.signature, prehashed=True) == 1

    async def test_wrong_digest_size_is_refused(self, openbao, backend):
        """Vault would sign a 3-byte 'digest'; the broker refuses it."""
        key_id = new_key(openbao, "ecdsa-p384")
        with pytest.raises(InvalidRequestError, match="digest must be 48 bytes"):
            await backend.sign(key_id, b"abc", prehashed=True)

    async def test_ed25519_takes_no_digest(self, openbao, backend):
        """Ed25519 signs messages only."""
        key_id = new_key(openbao, "ed25519")
        with pytest.raises(InvalidRequestError, match="send data, not a digest"):
            await backend.sign(key_id, bytes(64), prehashed=True)


class TestRotation:
    """Versions come from the `vault:vN:` prefix; old signatures keep verifying."""

    async def test_old_signatures_verify_after_rotation(self, openbao, backend):
        """After rotate, v1 signatures verify as version 1 and new ones are version 2."""
        key_id = new_key(openbao, "ecdsa-p384")
        old = await backend.sign(key_id, b"m", prehashed=False)
        old_pem = (await backend.public_key(key_id, 0)).pem
        described = await backend.rotate_key(key_id)
        new = await backend.sign(key_id, b"m", prehashed=False)
        assert (described.current_version, new.key_version) == (2, 2)
        assert await backend.verify(key_id, 0, b"m", old.signature, prehashed=False) == 1
        assert await backend.verify(key_id, 0, b"m", new.signature, prehashed=False) == 2
        assert (await backend.public_key(key_id, 1)).pem == old_pem
        assert (await backend.public_key(key_id, 2)).pem != old_pem
        with pytest.raises(VerificationFailedError):
            await backend.verify(key_id, 2, b"m", old.signature, prehashed=False)

    async def test_unknown_and_disabled_versions(self, openbao, backend):
        """A version past the latest does not exist; one below the minimum is disabled."""
        key_id = new_key(openbao, "ecdsa-p256")
        old = await backend.sign(key_id, b"m", prehashed=False)
        await backend.rotate_key(key_id)
        with pytest.raises(KeyStateError, match="no such key version"):
            await backend.verify(key_id, 3, b"m", old.signature, prehashed=False)
        with pytest.raises(KeyStateError, match="no such key version"):
            await backend.public_key(key_id, 3)
        await backend.set_version_state(key_id, 1, enabled=False)
        with pytest.raises(KeyStateError, match="disabled"):
            await backend.verify(key_id, 1, b"m", old.signature, prehashed=False)
        with pytest.raises(VerificationFailedError):
            await backend.verify(key_id, 0, b"m", old.signature, prehashed=False)
        with pytest.raises(KeyStateError, match="disabled"):
            await backend.public_key(key_id, 1)


class TestWrongKeys:
    """Keys that cannot sign, missing keys and a token without the policy."""

    async def test_encryption_key_is_wrong_purpose(self, openbao, backend):
        """An aes256-gcm96 key neither signs nor has a public key."""
        key_id = new_key(openbao, "aes256-gcm96")
        with pytest.raises(WrongKeyPurposeError, match="not a signing key"):
            await backend.sign(key_id, b"m", prehashed=False)
        with pytest.raises(WrongKeyPurposeError):
            await backend.public_key(key_id, 0)

    async def test_unsupported_type_is_wrong_purpose(self, openbao, backend):
        """ecdsa-p521 signs in Vault, but no broker algorithm matches it."""
        with pytest.raises(WrongKeyPurposeError):
            await backend.sign(new_key(openbao, "ecdsa-p521"), b"m", prehashed=False)

    async def test_missing_key(self, backend):
        """A key that does not exist is KmsKeyNotFoundError."""
        with pytest.raises(KmsKeyNotFoundError):
            await backend.sign("transit/no-such-key", b"m", prehashed=False)

    async def test_token_without_sign_capability(self, openbao):
        """A token that may read keys but not sign is an authentication problem."""
        openbao.write_policy("read-only", 'path "transit/keys/*" { capabilities = ["read"] }\n')
        token = openbao.mint_token(policies=["read-only"])
        transit = VaultTransitBackend(VaultSettings(address=openbao.url, token=token))
        try:
            with pytest.raises(KmsAuthenticationError):
                await transit.sign(new_key(openbao, "ecdsa-p384"), b"m", prehashed=False)
        finally:
            await transit.close()

    async def test_describe_names_the_signing_algorithm(self, openbao, backend):
        """DescribeKey reports the broker algorithm of a signing key."""
        described = await backend.describe_key(new_key(openbao, "rsa-3072"))
        assert described.algorithm == "rsa-pss-3072-sha256"


def exported_hmac_key(openbao: OpenBaoServer, key_id: str, version: int) -> bytes:
    """The HMAC key of a version, exported from an exportable key (for known answers)."""
    mount, _, name = key_id.rpartition("/")
    _, answer = openbao.api("GET", f"{mount}/export/hmac-key/{name}/{version}")
    return base64.b64decode(answer["data"]["keys"][str(version)])


class TestHmac:
    """Transit HMAC: the same MAC as HMAC-SHA256 under the key's exported HMAC key."""

    async def test_mac_matches_hmac_sha256(self, openbao, backend):
        """Known answer against the exported key; verify finds the version."""
        key_id = new_key(openbao, "hmac", key_size=32, exportable=True)
        result = await backend.mac(key_id, b"row 1")
        expected = hmac.new(exported_hmac_key(openbao, key_id, 1), b"row 1", hashlib.sha256)
        assert (result.mac, result.key_version) == (expected.digest(), 1)
        assert await backend.verify_mac(key_id, 0, b"row 1", result.mac) == 1
        with pytest.raises(VerificationFailedError):
            await backend.verify_mac(key_id, 0, b"row 2", result.mac)

    async def test_versions_after_rotation(self, openbao, backend):
        """Old MACs verify as version 1; an explicit old version still MACs; unknown ones fail."""
        key_id = new_key(openbao, "hmac", key_size=32)
        old = await backend.mac(key_id, b"x")
        await backend.rotate_key(key_id)
        new = await backend.mac(key_id, b"x")
        assert new.key_version == 2
        assert new.mac != old.mac
        assert await backend.verify_mac(key_id, 0, b"x", old.mac) == 1
        assert (await backend.mac(key_id, b"x", key_version=1)).mac == old.mac
        with pytest.raises(KeyStateError, match="no such key version"):
            await backend.mac(key_id, b"x", key_version=5)
        with pytest.raises(KeyStateError, match="no such key version"):
            await backend.verify_mac(key_id, 5, b"x", old.mac)

    async def test_blind_index(self, openbao, backend):
        """Index = HMAC(transit-HMAC(key, label), value)[:length], stable and label-scoped."""
        key_id = new_key(openbao, "hmac", key_size=32, exportable=True)
        first = await backend.derived_mac(key_id, b"label-a", b"alice", 16)
        again = await backend.derived_mac(key_id, b"label-a", b"alice", 16)
        other = await backend.derived_mac(key_id, b"label-b", b"alice", 16)
        secret = exported_hmac_key(openbao, key_id, 1)
        index_key = hmac.new(secret, b"label-a", hashlib.sha256).digest()
        expected = hmac.new(index_key, b"alice", hashlib.sha256).digest()[:16]
        assert first.mac == again.mac == expected
        assert other.mac != first.mac
        with pytest.raises(InvalidRequestError, match=r"length must be 16\.\.32"):
            await backend.derived_mac(key_id, b"label-a", b"alice", 8)


class TestThroughResilience:
    """The resilient wrapper exposes signing and HMAC, and bounds a hung Vault."""

    def test_wrapper_has_exactly_the_backend_abilities(self, openbao):
        """Transit signs and MACs here, but neither RSA-decrypts nor derives."""
        settings = VaultSettings(address=openbao.url, token=openbao.root_token)
        wrapped = resilient(VaultTransitBackend(settings))
        assert isinstance(wrapped, SigningBackend)
        assert isinstance(wrapped, MacBackend)
        assert not isinstance(wrapped, DecryptionBackend)
        assert not isinstance(wrapped, SecretBackend)

    async def test_hung_vault_is_unavailable_within_the_deadline(self, openbao):
        """A frozen Vault turns sign into KmsUnavailableError within the deadline."""
        settings = VaultSettings(address=openbao.url, token=openbao.root_token, timeout=0.5)
        wrapped = resilient(VaultTransitBackend(settings), ResilienceSettings(timeout=1.0))
        key_id = new_key(openbao, "ecdsa-p384")
        try:
            assert (await wrapped.sign(key_id, b"m", prehashed=False)).key_version == 1
            openbao.suspend()
            try:
                started = asyncio.get_running_loop().time()
                with pytest.raises(KmsUnavailableError):
                    await wrapped.sign(key_id, b"m", prehashed=False)
                assert asyncio.get_running_loop().time() - started < 1.5
            finally:
                openbao.resume()
        finally:
            await wrapped.close()
