from __future__ import annotations

import pytest
from unit.services.fakes import CALLER, Decision

from broker.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    VerificationFailedError,
)
from broker.services.hashing import HashingService, Index, IndexItem, Mac, MacItem, MacVerified

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.fixture
def hashing(ops) -> HashingService:
    """The hashing service over the shared fakes."""
    return HashingService(ops)


async def mac(hashing, data=b"order 42") -> Mac:
    """HMAC one item that must succeed."""
    (result,) = await hashing.hmac(CALLER, [MacItem("hmac", data)])
    assert isinstance(result, Mac), result
    return result


async def index(hashing, value=b"a@example.com", field="email", tenant="acme", length=0):
    """A blind index of one value; the result or the item's error."""
    (result,) = await hashing.blind_index(CALLER, [IndexItem("hmac", field, tenant, value, length)])
    return result


class TestDigests:
    """HashingService.digest and verify_digest: keyless SHA-256."""

    def test_known_answer(self, hashing):
        """SHA-256 of "abc" is the FIPS 180-2 value, in bytes and hex."""
        (digest,) = hashing.digest(CALLER, [b"abc"])
        assert digest.hex == ABC_SHA256

    def test_digest_is_authorized_as_a_keyless_operation(self, hashing, fakes):
        """Digests ask the policy once per request, as hash_password on key ""."""
        hashing.digest(CALLER, [b"a", b"b"])
        assert fakes.authz.decisions == [Decision(CALLER, "", "hash_password", {}, allowed=True)]

    def test_oversize_item_fails_the_whole_request(self, hashing):
        """A digest item over the data limit fails the request, naming the limit."""
        with pytest.raises(InvalidRequestError, match=r"server\.max_plaintext_bytes"):
            hashing.digest(CALLER, [b"ok", bytes(257)])

    @pytest.mark.parametrize(
        ("digest", "hex_digest"),
        [(bytes.fromhex(ABC_SHA256), None), (None, ABC_SHA256), (None, ABC_SHA256.upper())],
    )
    def test_verify_digest_accepts_bytes_or_hex(self, hashing, digest, hex_digest):
        """A matching digest, as bytes or hex of either case, verifies."""
        hashing.verify_digest(CALLER, b"abc", digest=digest, hex_digest=hex_digest)

    def test_verify_digest_mismatch(self, hashing):
        """Another message's digest is VerificationFailed."""
        with pytest.raises(VerificationFailedError):
            hashing.verify_digest(CALLER, b"abd", digest=None, hex_digest=ABC_SHA256)

    @pytest.mark.parametrize(
        ("digest", "hex_digest", "message"),
        [
            (None, "abc", "hex must be 64 hexadecimal characters (SHA-256)"),
            (None, "zz" * 32, "hex must be 64 hexadecimal characters (SHA-256)"),
            (b"short", None, "digest must be 32 bytes (SHA-256), or give hex"),
            (None, None, "digest must be 32 bytes (SHA-256), or give hex"),
        ],
    )
    def test_malformed_expected_digest(self, hashing, digest, hex_digest, message):
        """An expected digest that cannot be SHA-256 is InvalidRequest with a fixed message."""
        with pytest.raises(InvalidRequestError) as caught:
            hashing.verify_digest(CALLER, b"abc", digest=digest, hex_digest=hex_digest)
        assert caught.value.message == message


class TestHmac:
    """HashingService.hmac and verify_hmac: HMAC-SHA256 under a broker key."""

    async def test_mac_then_verify(self, hashing):
        """A MAC verifies and names the version that made it."""
        made = await mac(hashing)
        assert (len(made.mac), made.key, made.key_version) == (32, "hmac", 1)
        verified = await hashing.verify_hmac(CALLER, MacItem("hmac", b"order 42", made.mac))
        assert verified == MacVerified("hmac", 1)

    async def test_mac_is_deterministic(self, hashing):
        """The same data under the same version gives the same MAC."""
        assert (await mac(hashing)).mac == (await mac(hashing)).mac

    async def test_wrong_mac_fails(self, hashing):
        """A MAC of other data is VerificationFailed."""
        other = await mac(hashing, b"order 43")
        with pytest.raises(VerificationFailedError):
            await hashing.verify_hmac(CALLER, MacItem("hmac", b"order 42", other.mac))

    async def test_rotation(self, hashing, fakes):
        """After rotation new MACs use version 2 and old MACs still verify as version 1."""
        old = await mac(hashing)
        await fakes.macs.rotate_key("kek-hmac")
        new = await mac(hashing)
        assert new.key_version == 2
        assert new.mac != old.mac
        verified = await hashing.verify_hmac(CALLER, MacItem("hmac", b"order 42", old.mac))
        assert verified == MacVerified("hmac", 1)

    async def test_failed_verification_is_audited(self, hashing, fakes):
        """A MAC that does not match is audited as a failure of hmac_verify."""
        with pytest.raises(VerificationFailedError):
            await hashing.verify_hmac(CALLER, MacItem("hmac", b"x", bytes(32)))
        assert [(r.operation, type(r.error)) for r in fakes.audit.records] == [
            ("hmac_verify", VerificationFailedError)
        ]


class TestBlindIndex:
    """HashingService.blind_index: deterministic, scoped to field and tenant."""

    async def test_same_value_same_scope_same_index(self, hashing):
        """Equal values in one field and tenant index equally, so they can be searched."""
        first, second = await index(hashing), await index(hashing)
        assert isinstance(first, Index)
        assert (first.index, len(first.index), first.key_version) == (second.index, 32, 1)

    @pytest.mark.parametrize(("field", "tenant"), [("phone", "acme"), ("email", "globex")])
    async def test_other_field_or_tenant_indexes_differently(self, hashing, field, tenant):
        """The same value in another field or tenant gets an unrelated index."""
        base = await index(hashing)
        assert (await index(hashing, field=field, tenant=tenant)).index != base.index

    async def test_truncated_length(self, hashing):
        """A requested length of 16 gives a 16-byte index."""
        assert len((await index(hashing, length=16)).index) == 16

    @pytest.mark.parametrize("length", [15, 33])
    async def test_length_out_of_bounds(self, hashing, length):
        """Lengths outside 16..32 are InvalidRequest naming the bounds."""
        result = await index(hashing, length=length)
        assert isinstance(result, InvalidRequestError)
        assert result.message == "length must be 16..32 bytes (0 means 32)"

    async def test_empty_field_is_refused(self, hashing):
        """A blind index needs a field name."""
        assert isinstance(await index(hashing, field=""), InvalidRequestError)

    async def test_policy_sees_field_and_tenant(self, hashing, fakes):
        """The authorizer decides with the field and tenant as context, so it can scope them."""
        fakes.authz.deny(operation="hmac", key="hmac")
        result = await index(hashing)
        assert isinstance(result, PermissionDeniedError)
        assert fakes.authz.decisions[-1].context == {"field": "email", "tenant": "acme"}
