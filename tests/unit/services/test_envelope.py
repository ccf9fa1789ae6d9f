from __future__ import annotations

import collections
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from unit.services.fakes import CALLER, Decision

from broker.errors import (
    DECRYPTION_FAILED_MESSAGE,
    DecryptionFailedError,
    InvalidRequestError,
    KeyNotFoundError,
    KmsUnavailableError,
    PermissionDeniedError,
    WrongKeyPurposeError,
)
from broker.services.envelope import (
    DecryptItem,
    EncryptItem,
    EnvelopeLimits,
    EnvelopeService,
    Opened,
    RewrapItem,
    Sealed,
)

TENANT = {"tenant": "acme", "table": "orders"}

# Each example builds its own services from the per-test fakes: sharing the fakes is intended.
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
contexts = st.dictionaries(st.text(min_size=1, max_size=16), st.text(max_size=32), max_size=4)


async def seal(service, plaintext=b"hello", key="default", context=None, *, store=False) -> Sealed:
    """Encrypt one item that must succeed."""
    (result,) = await service.encrypt(CALLER, [EncryptItem(key, plaintext, context or {}, store)])
    assert isinstance(result, Sealed), result
    return result


async def unseal(service, ciphertext, context=None):
    """Decrypt one item; the result or the item's error."""
    (result,) = await service.decrypt(CALLER, [DecryptItem(ciphertext, context or {})])
    return result


def _assert_decryption_failed(result) -> None:
    assert isinstance(result, DecryptionFailedError)
    assert result.message == DECRYPTION_FAILED_MESSAGE


class TestRoundTrip:
    """EnvelopeService.encrypt then decrypt: what went in comes out, under the same context."""

    async def test_without_context(self, envelope):
        """A plaintext sealed without context opens without context."""
        sealed = await seal(envelope, b"card 4111")
        opened = await unseal(envelope, sealed.ciphertext)
        assert opened == Opened(b"card 4111", "default", 1)

    async def test_with_context(self, envelope):
        """A plaintext sealed under a context opens when the same context is presented."""
        sealed = await seal(envelope, b"card 4111", context=TENANT)
        assert (
            await unseal(envelope, sealed.ciphertext, dict(reversed(TENANT.items())))
        ) == Opened(b"card 4111", "default", 1)

    async def test_cold_cache_round_trip_unwraps_once(self, envelope, make_envelope, fakes):
        """Another broker instance (empty caches) opens the envelope with one unwrap."""
        sealed = await seal(envelope, b"data", context=TENANT)
        cold = make_envelope()
        opened = await unseal(cold, sealed.ciphertext, TENANT)
        assert isinstance(opened, Opened)
        assert opened.plaintext == b"data"
        assert fakes.kms.calls["unwrap"] == 1

    async def test_stored_context_need_not_be_presented(self, envelope):
        """With store_context the envelope carries its context; decrypt needs none."""
        sealed = await seal(envelope, b"x", context=TENANT, store=True)
        assert (await unseal(envelope, sealed.ciphertext)).plaintext == b"x"
        assert (await unseal(envelope, sealed.ciphertext, TENANT)).plaintext == b"x"

    async def test_empty_plaintext(self, envelope):
        """An empty plaintext is a valid message."""
        sealed = await seal(envelope, b"")
        assert (await unseal(envelope, sealed.ciphertext)).plaintext == b""

    async def test_two_envelopes_of_one_plaintext_differ(self, envelope):
        """Sealing is randomized: equal plaintexts give different ciphertexts."""
        first, second = await seal(envelope, b"same"), await seal(envelope, b"same")
        assert first.ciphertext != second.ciphertext

    @PROPERTY
    @given(plaintext=st.binary(max_size=1024), context=contexts)
    async def test_any_plaintext_and_context_round_trip(self, plaintext, context, make_envelope):
        """Any plaintext within the limit and any context round trip, warm and cold."""
        warm = make_envelope()
        sealed = await seal(warm, plaintext, context=context)
        assert (await unseal(warm, sealed.ciphertext, context)).plaintext == plaintext
        assert (await unseal(make_envelope(), sealed.ciphertext, context)).plaintext == plaintext


class TestDecryptionFailure:
    """EnvelopeService.decrypt: every way an envelope cannot open is one fixed error."""

    @PROPERTY
    @given(sealed_under=contexts, presented=contexts)
    async def test_any_other_context_fails(self, sealed_under, presented, make_envelope):
        """Presenting any context but the sealing one fails, warm and cold."""
        assume(sealed_under != presented)
        warm = make_envelope()
        sealed = await seal(warm, b"x", context=sealed_under)
        _assert_decryption_failed(await unseal(warm, sealed.ciphertext, presented))
        _assert_decryption_failed(await unseal(make_envelope(), sealed.ciphertext, presented))

    async def test_wrong_context_fails_with_warm_cache(self, envelope):
        """A different context fails even though the DEK is cached."""
        sealed = await seal(envelope, context=TENANT)
        _assert_decryption_failed(await unseal(envelope, sealed.ciphertext, {"tenant": "evil"}))

    async def test_wrong_context_fails_with_cold_cache(self, envelope, make_envelope):
        """A different context fails at the KMS unwrap, with the same error."""
        sealed = await seal(envelope, context=TENANT)
        _assert_decryption_failed(await unseal(make_envelope(), sealed.ciphertext, {"t": "x"}))

    async def test_missing_context_fails(self, envelope):
        """Leaving out the context an envelope was sealed with fails."""
        sealed = await seal(envelope, context=TENANT)
        _assert_decryption_failed(await unseal(envelope, sealed.ciphertext))

    async def test_other_context_than_the_stored_one_fails(self, envelope):
        """Presenting a context that differs from the stored one fails."""
        sealed = await seal(envelope, context=TENANT, store=True)
        _assert_decryption_failed(await unseal(envelope, sealed.ciphertext, {"tenant": "evil"}))

    @pytest.mark.parametrize("where", [0, 8, 60, -20, -1])
    async def test_any_flipped_byte_fails(self, envelope, where):
        """Flipping a byte of the header, wrapped DEK, nonce or body fails."""
        sealed = bytearray((await seal(envelope)).ciphertext)
        sealed[where] ^= 0x01
        _assert_decryption_failed(await unseal(envelope, bytes(sealed)))

    @pytest.mark.parametrize("garbage", [b"", b"\x01", os.urandom(200)])
    async def test_garbage_fails(self, envelope, garbage):
        """Bytes that are no envelope fail the same way."""
        _assert_decryption_failed(await unseal(envelope, garbage))

    async def test_envelope_of_an_unconfigured_key_fails(self, envelope, fakes, deks):
        """An envelope naming a key this broker does not serve is undecryptable, not NOT_FOUND."""
        sealed = await seal(envelope, key="payments")
        narrow = EnvelopeService(
            fakes.registry(without=["payments"]), deks, fakes.authz, EnvelopeLimits()
        )
        _assert_decryption_failed(await unseal(narrow, sealed.ciphertext))


class TestAuthorization:
    """EnvelopeService: the policy decides before any key is looked up or used."""

    async def test_unknown_key_denied_is_permission_denied(self, envelope, fakes):
        """With a denying policy an unknown key gives PermissionDenied, not KeyNotFound."""
        fakes.authz.deny(key="nope")
        (result,) = await envelope.encrypt(CALLER, [EncryptItem("nope", b"x")])
        assert isinstance(result, PermissionDeniedError)
        assert fakes.kms_calls() == 0

    async def test_unknown_key_allowed_is_key_not_found(self, envelope, fakes):
        """Only an authorized caller learns that a key does not exist."""
        (result,) = await envelope.encrypt(CALLER, [EncryptItem("nope", b"x")])
        assert isinstance(result, KeyNotFoundError)
        assert fakes.authz.decisions == [Decision(CALLER, "nope", "encrypt", {}, allowed=True)]

    async def test_decision_sees_caller_key_operation_and_context(self, envelope, fakes):
        """The policy is asked once per item, with the item's key and context."""
        await seal(envelope, key="payments", context=TENANT)
        assert fakes.authz.decisions == [
            Decision(CALLER, "payments", "encrypt", TENANT, allowed=True)
        ]

    async def test_malformed_key_name_is_refused_before_policy(self, envelope, fakes):
        """A name that cannot be a key is InvalidRequest and never reaches the policy."""
        (result,) = await envelope.encrypt(CALLER, [EncryptItem("../etc", b"x")])
        assert isinstance(result, InvalidRequestError)
        assert fakes.authz.decisions == []

    async def test_denied_decrypt_makes_no_kms_call(self, envelope, make_envelope, fakes):
        """A caller denied decrypt gets PermissionDenied and the DEK is never unwrapped."""
        sealed = await seal(envelope)
        fakes.authz.deny(operation="decrypt")
        result = await unseal(make_envelope(), sealed.ciphertext)
        assert isinstance(result, PermissionDeniedError)
        assert fakes.kms.calls["unwrap"] == 0

    async def test_decrypt_is_authorized_on_the_stored_context(self, envelope, fakes):
        """When the envelope stores its context, the policy decides on that context."""
        sealed = await seal(envelope, context=TENANT, store=True)
        await unseal(envelope, sealed.ciphertext)
        assert fakes.authz.decisions[-1] == Decision(
            CALLER, "default", "decrypt", TENANT, allowed=True
        )

    async def test_key_of_another_purpose_is_refused(self, envelope):
        """Encrypting under a signing key is WrongKeyPurpose."""
        (result,) = await envelope.encrypt(CALLER, [EncryptItem("signing", b"x")])
        assert isinstance(result, WrongKeyPurposeError)


class TestBatch:
    """EnvelopeService batches: per-item outcomes, request-wide limits and KMS failures."""

    async def test_denied_item_does_not_stop_the_others(self, envelope, fakes):
        """One denied item is a PermissionDenied result; its neighbours are sealed."""
        fakes.authz.deny(key="payments")
        items = [
            EncryptItem("default", b"a"),
            EncryptItem("payments", b"b"),
            EncryptItem("default", b"c"),
        ]
        results = await envelope.encrypt(CALLER, items)
        assert [type(r) for r in results] == [Sealed, PermissionDeniedError, Sealed]

    async def test_each_outcome_is_audited_exactly_once(self, envelope, fakes):
        """Every item, allowed or denied, reaches the audit sink once."""
        fakes.authz.deny(key="payments")
        items = [
            EncryptItem("default", b"a"),
            EncryptItem("payments", b"b"),
            EncryptItem("default", b"c"),
        ]
        await envelope.encrypt(CALLER, items)
        outcomes = collections.Counter(
            (r.operation, r.key, r.key_version, type(r.error)) for r in fakes.audit.records
        )
        assert outcomes == {
            ("encrypt", "default", 1, type(None)): 2,
            ("encrypt", "", 0, PermissionDeniedError): 1,
        }

    async def test_decrypt_batch_mixes_results(self, envelope):
        """A batch of decrypts returns plaintexts and failures in item order."""
        sealed = await seal(envelope, b"good")
        items = [
            DecryptItem(sealed.ciphertext),
            DecryptItem(b"junk"),
            DecryptItem(sealed.ciphertext),
        ]
        results = await envelope.decrypt(CALLER, items)
        assert [getattr(r, "plaintext", type(r)) for r in results] == [
            b"good",
            DecryptionFailedError,
            b"good",
        ]

    async def test_oversize_plaintext_is_refused_naming_the_limit(self, envelope, fakes):
        """A plaintext over server.max_plaintext_bytes is an InvalidRequest item naming it."""
        (result,) = await envelope.encrypt(CALLER, [EncryptItem("default", bytes(1025))])
        assert isinstance(result, InvalidRequestError)
        assert "1024 bytes (server.max_plaintext_bytes)" in result.message
        assert fakes.kms_calls() == 0

    async def test_plaintext_at_the_limit_is_sealed(self, envelope):
        """Exactly max_plaintext_bytes is allowed."""
        assert (await seal(envelope, bytes(1024))).key == "default"

    @pytest.mark.parametrize("operation", ["encrypt", "decrypt", "rewrap"])
    async def test_oversize_batch_is_refused_naming_the_limit(self, envelope, fakes, operation):
        """More than server.max_batch_items items fail the request before any work."""
        items = {
            "encrypt": [EncryptItem("default", b"x")] * 9,
            "decrypt": [DecryptItem(b"x")] * 9,
            "rewrap": [RewrapItem(b"x")] * 9,
        }[operation]
        with pytest.raises(InvalidRequestError) as caught:
            await getattr(envelope, operation)(CALLER, items)
        assert caught.value.message == "batch has 9 items; the limit is 8 (server.max_batch_items)"
        assert fakes.audit.records == []
        assert fakes.kms_calls() == 0

    async def test_kms_outage_fails_the_encrypt_request(self, envelope, fakes):
        """A KMS that is down fails the whole request as KmsUnavailable, and it is audited."""
        fakes.kms.down = True
        with pytest.raises(KmsUnavailableError):
            await envelope.encrypt(CALLER, [EncryptItem("default", b"x")])
        assert fakes.audit.errors() == [KmsUnavailableError]

    async def test_kms_outage_fails_a_cold_decrypt(self, envelope, make_envelope, fakes):
        """Decrypting with an empty cache while the KMS is down is KmsUnavailable."""
        sealed = await seal(envelope)
        fakes.kms.down = True
        with pytest.raises(KmsUnavailableError):
            await make_envelope().decrypt(CALLER, [DecryptItem(sealed.ciphertext)])

    async def test_cached_deks_keep_serving_during_an_outage(self, envelope, fakes):
        """While the KMS is down, envelopes whose DEK is cached still seal and open."""
        sealed = await seal(envelope)
        fakes.kms.down = True
        assert (await unseal(envelope, sealed.ciphertext)).plaintext == b"hello"
        assert (await seal(envelope, b"more")).key_version == 1

    async def test_invalid_context_is_an_item_error(self, envelope):
        """A context with an empty key is InvalidRequest for that item only."""
        results = await envelope.encrypt(
            CALLER, [EncryptItem("default", b"x", {"": "v"}), EncryptItem("default", b"y")]
        )
        assert [type(r) for r in results] == [InvalidRequestError, Sealed]


class TestRewrap:
    """EnvelopeService.rewrap: re-seal under the current version, or under another key."""

    async def test_rewrap_under_another_key(self, envelope):
        """The rewrapped envelope names the destination key and opens to the same plaintext."""
        sealed = await seal(envelope, b"move me", context=TENANT)
        (moved,) = await envelope.rewrap(
            CALLER, [RewrapItem(sealed.ciphertext, TENANT, "payments")]
        )
        assert isinstance(moved, Sealed)
        assert moved.key == "payments"
        assert (await unseal(envelope, moved.ciphertext, TENANT)).plaintext == b"move me"

    async def test_rewrap_keeps_a_stored_context_stored(self, envelope):
        """An envelope that stored its context still needs none after a rewrap."""
        sealed = await seal(envelope, b"x", context=TENANT, store=True)
        (moved,) = await envelope.rewrap(CALLER, [RewrapItem(sealed.ciphertext)])
        assert (await unseal(envelope, moved.ciphertext)).plaintext == b"x"

    async def test_rewrap_with_wrong_context_fails(self, envelope):
        """Rewrap opens first, so a wrong context fails like decrypt."""
        sealed = await seal(envelope, context=TENANT)
        (result,) = await envelope.rewrap(CALLER, [RewrapItem(sealed.ciphertext, {"a": "b"})])
        _assert_decryption_failed(result)

    async def test_rewrap_is_authorized_as_rewrap(self, envelope, fakes):
        """A caller denied rewrap gets PermissionDenied even though decrypt is allowed."""
        sealed = await seal(envelope)
        fakes.authz.deny(operation="rewrap")
        (result,) = await envelope.rewrap(CALLER, [RewrapItem(sealed.ciphertext)])
        assert isinstance(result, PermissionDeniedError)


class TestDataKeysAndLeases:
    """EnvelopeService.generate_data_key and lease: keys the caller uses itself."""

    async def test_data_key_envelope_opens_to_the_key(self, envelope):
        """The sealed form of a generated data key decrypts to that key."""
        plaintext, sealed = await envelope.generate_data_key(CALLER, "default", TENANT)
        assert len(plaintext) == 32
        assert (await unseal(envelope, sealed.ciphertext, TENANT)).plaintext == plaintext

    async def test_locally_sealed_lease_envelope_decrypts(self, envelope):
        """An envelope a client seals with a lease opens through the broker."""
        grant = await envelope.lease(CALLER, "default", TENANT)
        nonce = os.urandom(12)
        header = grant.header_prefix + nonce
        body = AESGCM(grant.data_key).encrypt(nonce, b"sealed offline", header + grant.aad_suffix)
        assert (await unseal(envelope, header + body, TENANT)).plaintext == b"sealed offline"

    async def test_lease_expiry_and_limits_come_from_configuration(self, make_envelope, fakes):
        """A lease expires lease_ttl_seconds after the wall clock's now, with configured limits."""
        limits = EnvelopeLimits(lease_ttl_seconds=60, lease_max_messages=10, lease_max_bytes=999)
        grant = await make_envelope(limits=limits).lease(CALLER, "default", {})
        assert grant.expires_at == fakes.clock() + 60
        assert (grant.max_messages, grant.max_bytes) == (10, 999)

    async def test_each_lease_is_a_fresh_dek(self, envelope, fakes):
        """Leases never share a DEK: each one is a KMS call."""
        first = await envelope.lease(CALLER, "default", {})
        second = await envelope.lease(CALLER, "default", {})
        assert first.data_key != second.data_key
        assert fakes.kms.calls["generate_data_key"] == 2

    async def test_lease_is_authorized_as_lease(self, envelope, fakes):
        """A caller denied leases gets PermissionDenied and no key material."""
        fakes.authz.deny(operation="lease")
        with pytest.raises(PermissionDeniedError):
            await envelope.lease(CALLER, "default", {})
        assert fakes.kms_calls() == 0
