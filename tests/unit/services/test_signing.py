from __future__ import annotations

import hashlib

import pytest
from unit.services.fakes import CALLER, SIGNING_ALGORITHM

from broker.core import signatures
from broker.errors import (
    InvalidRequestError,
    KeyStateError,
    PermissionDeniedError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.services.signing import Signed, SigningService, SignItem, Verified, VerifyItem


@pytest.fixture
def signing(ops) -> SigningService:
    """The signing service over the shared fakes."""
    return SigningService(ops)


async def sign(signing, message=b"release 1.0", *, prehashed=False) -> Signed:
    """Sign one message that must succeed."""
    (result,) = await signing.sign(CALLER, [SignItem("signing", message, prehashed)])
    assert isinstance(result, Signed), result
    return result


async def verify(signing, message, signature, version=0, *, prehashed=False):
    """Verify one signature; the result or the item's error."""
    item = VerifyItem("signing", message, signature, version, prehashed)
    (result,) = await signing.verify(CALLER, [item])
    return result


class TestSigningService:
    """SigningService: sign, verify and public keys of keys that stay in the backend."""

    async def test_sign_then_verify(self, signing):
        """A signature verifies and names the key version that made it."""
        signed = await sign(signing)
        assert (signed.key, signed.key_version, signed.algorithm) == (
            "signing",
            1,
            SIGNING_ALGORITHM,
        )
        assert await verify(signing, b"release 1.0", signed.signature) == Verified("signing", 1)

    async def test_other_message_fails_verification(self, signing):
        """A signature over another message is VerificationFailed, not a false result."""
        signed = await sign(signing)
        assert isinstance(
            await verify(signing, b"release 1.1", signed.signature), VerificationFailedError
        )

    async def test_prehashed_digest(self, signing):
        """A signature over a digest verifies against the message's digest."""
        digest = hashlib.sha256(b"big file").digest()
        signed = await sign(signing, digest, prehashed=True)
        assert await verify(signing, digest, signed.signature, prehashed=True) == Verified(
            "signing", 1
        )

    async def test_digest_of_the_wrong_size_is_an_item_error(self, signing):
        """A digest that is not the algorithm's size is InvalidRequest naming the size."""
        (result,) = await signing.sign(CALLER, [SignItem("signing", b"short", prehashed=True)])
        assert isinstance(result, InvalidRequestError)
        assert "32 bytes" in result.message

    async def test_oversize_signature_is_refused(self, signing, fakes):
        """A signature longer than any supported one is refused before the backend."""
        result = await verify(signing, b"m", bytes(signatures.MAX_SIGNATURE_BYTES + 1))
        assert isinstance(result, InvalidRequestError)
        assert fakes.signer.calls["verify"] == 0

    async def test_oversize_message_is_refused_naming_the_limit(self, signing):
        """A message over the data limit is InvalidRequest naming the setting."""
        (result,) = await signing.sign(CALLER, [SignItem("signing", bytes(257))])
        assert isinstance(result, InvalidRequestError)
        assert "server.max_plaintext_bytes" in result.message

    async def test_after_rotation_old_signatures_still_verify(self, signing, fakes):
        """Verification with version 0 finds the older version that signed."""
        old = await sign(signing)
        await fakes.signer.rotate_key("kek-signing")
        new = await sign(signing)
        assert new.key_version == 2
        assert await verify(signing, b"release 1.0", old.signature) == Verified("signing", 1)
        assert isinstance(
            await verify(signing, b"release 1.0", old.signature, 2), VerificationFailedError
        )

    async def test_disabled_version_no_longer_verifies(self, signing, fakes):
        """A signature of a disabled version fails; naming that version is KeyState."""
        old = await sign(signing)
        await fakes.signer.rotate_key("kek-signing")
        await fakes.signer.set_version_state("kek-signing", 1, enabled=False)
        assert isinstance(
            await verify(signing, b"release 1.0", old.signature), VerificationFailedError
        )
        assert isinstance(await verify(signing, b"release 1.0", old.signature, 1), KeyStateError)

    async def test_public_key_verifies_offline(self, signing):
        """The PEM public key checks a signature without the broker."""
        signed = await sign(signing)
        public = await signing.public_key(CALLER, "signing", 0)
        assert (public.key, public.key_version, public.algorithm) == (
            "signing",
            1,
            SIGNING_ALGORITHM,
        )
        key = signatures.load_public_key(public.pem)
        signatures.verify(key, SIGNING_ALGORITHM, signed.signature, b"release 1.0")

    async def test_verify_is_authorized_separately_from_sign(self, signing, fakes):
        """A caller may be allowed to verify but not to sign."""
        signed = await sign(signing)
        fakes.authz.deny(operation="sign")
        (denied,) = await signing.sign(CALLER, [SignItem("signing", b"m")])
        assert isinstance(denied, PermissionDeniedError)
        assert await verify(signing, b"release 1.0", signed.signature) == Verified("signing", 1)

    async def test_signing_key_on_a_backend_that_cannot_sign(self, signing):
        """A signing key mapped to an envelope-only backend is WrongKeyPurpose, with a reason."""
        (result,) = await signing.sign(CALLER, [SignItem("odd-signer", b"m")])
        assert isinstance(result, WrongKeyPurposeError)
        assert result.message == "this key's backend cannot sign"

    async def test_audit_names_the_version_used(self, signing, fakes):
        """Each signature is audited with the key and the version that made it."""
        await fakes.signer.rotate_key("kek-signing")
        await sign(signing)
        assert [(r.operation, r.key, r.key_version) for r in fakes.audit.records] == [
            ("sign", "signing", 2)
        ]
