"""AwsKmsBackend as a SigningBackend against moto_server's KMS Sign and GetPublicKey.

What moto_server 5.2 does not model, and so is checked here on the request rather than on
the signature: MessageType DIGEST (moto hashes whatever it gets), the RSASSA-PSS salt length
(moto uses the maximum, KMS the digest length) and disabling an asymmetric key (moto fails).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from integration.kms.servers import MotoServer

from broker.errors import (
    InvalidRequestError,
    KeyStateError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.kms.aws import AwsKmsBackend, AwsKmsSettings
from broker.kms.base import DecryptionBackend, MacBackend, PublicKeyBackend, SigningBackend
from broker.kms.resilience import ResilienceSettings
from broker.kms.resilient_ops import resilient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MISSING_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000"
CURVES = {"ECC_NIST_P384": (hashes.SHA384, 384), "ECC_NIST_P256": (hashes.SHA256, 256)}


class Recording:
    """A boto3 KMS client that remembers every call's operation and parameters."""

    def __init__(self, client: Any) -> None:
        """Forward to `client`."""
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        """Wrap API methods so their calls are recorded."""
        method = getattr(self._client, name)

        def call(**params: Any) -> Any:
            self.calls.append((name, params))
            return method(**params)

        return call

    def names(self) -> list[str]:
        """The operations called so far."""
        return [name for name, _ in self.calls]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """One moto_server for the module."""
    with MotoServer() as server:
        yield server


def settings_for(moto: MotoServer, **overrides: Any) -> AwsKmsSettings:
    """Settings pointing at `moto` with its dummy credentials."""
    values = {
        "region": moto.region,
        "endpoint_url": moto.url,
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        **overrides,
    }
    return AwsKmsSettings(**values)


def signing_key(moto: MotoServer, spec: str = "ECC_NIST_P384") -> str:
    """A fresh asymmetric SIGN_VERIFY key; its ARN."""
    metadata = moto.client().create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    return str(metadata["Arn"])


@pytest.fixture
async def recorded(moto: MotoServer) -> AsyncIterator[tuple[AwsKmsBackend, Recording]]:
    """A backend over a recording client, and the recording."""
    client = Recording(moto.client())
    backend = AwsKmsBackend(settings_for(moto), client=client)
    yield backend, client
    await backend.close()


def third_party_verify(pem: str, spec: str, signature: bytes, message: bytes) -> None:
    """Verify with pyca alone from the PEM, as anyone outside the broker can."""
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    hash_class, bits = CURVES[spec]
    assert public.curve.key_size == bits
    public.verify(signature, message, ec.ECDSA(hash_class()))


class TestSign:
    """KMS Sign with the algorithm of the key's spec; verification outside the broker."""

    @pytest.mark.parametrize("spec", list(CURVES))
    async def test_signature_verifies_outside_the_broker(self, moto, recorded, spec):
        """A KMS signature checks with pyca and the PEM the backend serves."""
        backend, _ = recorded
        key_id = signing_key(moto, spec)
        signed = await backend.sign(key_id, b"invoice 42", prehashed=False)
        info = await backend.public_key(key_id, 0)
        assert (signed.key_version, info.key_version) == (0, 0)
        assert (
            signed.algorithm == info.algorithm == f"ecdsa-p{CURVES[spec][1]}-sha{CURVES[spec][1]}"
        )
        third_party_verify(info.pem, spec, signed.signature, b"invoice 42")
        with pytest.raises(InvalidSignature):
            third_party_verify(info.pem, spec, signed.signature, b"invoice 43")

    async def test_request_names_the_algorithm_and_raw_message(self, moto, recorded):
        """Short messages go as RAW with the spec's SigningAlgorithm."""
        backend, client = recorded
        key_id = signing_key(moto)
        await backend.sign(key_id, b"m", prehashed=False)
        _, params = client.calls[-1]
        assert (params["MessageType"], params["SigningAlgorithm"]) == ("RAW", "ECDSA_SHA_384")
        assert params["Message"] == b"m"

    @pytest.mark.parametrize("message", [b"", b"x" * 4097], ids=["empty", "over-4096"])
    async def test_messages_kms_refuses_raw_go_as_digest(self, moto, recorded, message):
        """Empty and >4096-byte messages are hashed here and sent as DIGEST."""
        backend, client = recorded
        await backend.sign(signing_key(moto), message, prehashed=False)
        _, params = client.calls[-1]
        assert params["MessageType"] == "DIGEST"
        assert params["Message"] == hashlib.sha384(message).digest()

    async def test_caller_digest_goes_as_digest(self, moto, recorded):
        """A prehashed item is sent as DIGEST unchanged."""
        backend, client = recorded
        digest = hashlib.sha384(b"doc").digest()
        await backend.sign(signing_key(moto), digest, prehashed=True)
        _, params = client.calls[-1]
        assert (params["MessageType"], params["Message"]) == ("DIGEST", digest)

    async def test_wrong_digest_size_is_refused_before_kms(self, moto, recorded):
        """A 32-byte digest for a P-384 key is an invalid request; Sign is never called."""
        backend, client = recorded
        key_id = signing_key(moto)
        await backend.public_key(key_id, 0)
        with pytest.raises(InvalidRequestError, match="digest must be 48 bytes"):
            await backend.sign(key_id, bytes(32), prehashed=True)
        assert "sign" not in client.names()

    async def test_rsa_key_signs_with_pss(self, moto, recorded):
        """RSA_3072 keys sign with RSASSA_PSS_SHA_256; the PEM is the key's RSA public key."""
        backend, client = recorded
        key_id = signing_key(moto, "RSA_3072")
        signed = await backend.sign(key_id, b"m", prehashed=False)
        assert signed.algorithm == "rsa-pss-3072-sha256"
        assert client.calls[-1][1]["SigningAlgorithm"] == "RSASSA_PSS_SHA_256"
        public = serialization.load_pem_public_key(
            (await backend.public_key(key_id, 0)).pem.encode()
        )
        assert isinstance(public, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        public.verify(signed.signature, b"m", pss, hashes.SHA256())

    async def test_alias_signs(self, moto, recorded):
        """An alias works like the key id."""
        backend, _ = recorded
        key_id = signing_key(moto)
        moto.client().create_alias(AliasName="alias/signer", TargetKeyId=key_id)
        signed = await backend.sign("alias/signer", b"m", prehashed=False)
        assert await backend.verify(key_id, 0, b"m", signed.signature, prehashed=False) == 0


class TestVerify:
    """Verification with the cached public key."""

    async def test_round_trip_and_tampering(self, moto, recorded):
        """A valid signature verifies as version 0; a changed one or message fails."""
        backend, _ = recorded
        key_id = signing_key(moto)
        signature = (await backend.sign(key_id, b"m", prehashed=False)).signature
        assert await backend.verify(key_id, 0, b"m", signature, prehashed=False) == 0
        flipped = signature[:-1] + bytes([signature[-1] ^ 1])
        for message, candidate in ((b"m", flipped), (b"n", signature), (b"m", b"junk")):
            with pytest.raises(VerificationFailedError):
                await backend.verify(key_id, 0, message, candidate, prehashed=False)

    async def test_prehashed_verification(self, moto, recorded):
        """A signature over a message verifies against its digest too."""
        backend, _ = recorded
        key_id = signing_key(moto)
        signature = (await backend.sign(key_id, b"doc", prehashed=False)).signature
        digest = hashlib.sha384(b"doc").digest()
        assert await backend.verify(key_id, 0, digest, signature, prehashed=True) == 0

    async def test_verify_makes_no_kms_call_once_cached(self, moto, recorded):
        """After the first GetPublicKey, verification stays in the broker."""
        backend, client = recorded
        key_id = signing_key(moto)
        signature = (await backend.sign(key_id, b"m", prehashed=False)).signature
        before = len(client.calls)
        for _ in range(5):
            await backend.verify(key_id, 0, b"m", signature, prehashed=False)
        await backend.public_key(key_id, 0)
        assert len(client.calls) == before

    async def test_public_key_is_refetched_after_its_lifetime(self, moto):
        """The cached public key expires, so a moved alias is followed."""
        now = [0.0]
        client = Recording(moto.client())
        backend = AwsKmsBackend(settings_for(moto), client=client)
        backend._signing._clock = lambda: now[0]
        try:
            key_id = signing_key(moto)
            await backend.public_key(key_id, 0)
            now[0] += 301
            await backend.public_key(key_id, 0)
        finally:
            await backend.close()
        assert client.names().count("get_public_key") == 2

    async def test_only_version_zero_exists(self, moto, recorded):
        """Any other version of a KMS key is a key-state error."""
        backend, _ = recorded
        key_id = signing_key(moto)
        with pytest.raises(KeyStateError, match="only version 0"):
            await backend.public_key(key_id, 1)
        with pytest.raises(KeyStateError, match="only version 0"):
            await backend.verify(key_id, 2, b"m", b"sig", prehashed=False)


class TestWrongKeys:
    """Keys the backend cannot sign with."""

    async def test_symmetric_key_is_wrong_purpose(self, moto, recorded):
        """An ENCRYPT_DECRYPT key does not sign."""
        backend, _ = recorded
        with pytest.raises(WrongKeyPurposeError, match="not an asymmetric signing key"):
            await backend.sign(moto.create_key(), b"m", prehashed=False)

    async def test_unsupported_spec_is_wrong_purpose(self, moto, recorded):
        """P-521 signs in KMS, but no broker algorithm matches it."""
        backend, _ = recorded
        with pytest.raises(WrongKeyPurposeError, match="ECC_NIST_P521 cannot sign here"):
            await backend.public_key(signing_key(moto, "ECC_NIST_P521"), 0)

    async def test_missing_key(self, recorded):
        """A key that does not exist is KmsKeyNotFoundError."""
        backend, _ = recorded
        with pytest.raises(KmsKeyNotFoundError):
            await backend.sign(MISSING_KEY, b"m", prehashed=False)

    async def test_describe_names_the_signing_algorithm(self, moto, recorded):
        """DescribeKey reports the broker algorithm; asymmetric keys do not rotate."""
        backend, _ = recorded
        described = await backend.describe_key(signing_key(moto))
        assert (described.algorithm, described.rotatable) == ("ecdsa-p384-sha384", False)


class TestThroughResilience:
    """The resilient wrapper forwards signing with its deadline and breaker."""

    def test_wrapper_has_exactly_the_backend_abilities(self, moto):
        """AWS signs but does not RSA-decrypt or HMAC here: the wrapper says the same."""
        wrapped = resilient(AwsKmsBackend(settings_for(moto)))
        assert isinstance(wrapped, SigningBackend)
        assert isinstance(wrapped, PublicKeyBackend)
        assert not isinstance(wrapped, DecryptionBackend)
        assert not isinstance(wrapped, MacBackend)

    async def test_hung_kms_fails_within_the_deadline_then_recovers(self):
        """Sign through a frozen KMS is UNAVAILABLE in time; cached verification still works."""
        with MotoServer() as own:
            settings = settings_for(own, read_timeout=0.5, connect_timeout=0.5)
            limits = ResilienceSettings(timeout=1.0, breaker_failures=1, breaker_reset_seconds=0.2)
            wrapped = resilient(AwsKmsBackend(settings), limits)
            try:
                key_id = signing_key(own)
                signature = (await wrapped.sign(key_id, b"m", prehashed=False)).signature
                own.suspend()
                try:
                    with pytest.raises(KmsUnavailableError):
                        await wrapped.sign(key_id, b"m", prehashed=False)
                    assert wrapped.state == "open"
                    with pytest.raises(KmsUnavailableError, match="circuit open"):
                        await wrapped.verify(key_id, 0, b"m", signature, prehashed=False)
                finally:
                    own.resume()
                await _until_closed(wrapped, key_id, signature)
            finally:
                await wrapped.close()


async def _until_closed(wrapped: Any, key_id: str, signature: bytes) -> None:
    """Retry verification until the breaker lets a probe through and it succeeds."""
    for _ in range(50):
        try:
            assert await wrapped.verify(key_id, 0, b"m", signature, prehashed=False) == 0
        except KmsUnavailableError:
            await asyncio.sleep(0.1)
        else:
            return
    pytest.fail("the breaker never closed again")
