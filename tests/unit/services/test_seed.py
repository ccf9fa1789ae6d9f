"""EnvelopeService.open_seed: envelopes ecl_crypto_utility sealed under a KMS key.

The KMS here is an in-memory stand-in for the key the seed used (AES-GCM, no context), and
the envelopes are built with json, base64 and pyca from the seed README's description.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from unit.services.fakes import CALLER, Decision, Fakes

from broker.errors import (
    DECRYPTION_FAILED_MESSAGE,
    DecryptionFailedError,
    InvalidRequestError,
    KeyNotFoundError,
    KeyStateError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    PermissionDeniedError,
    WrongKeyPurposeError,
)
from broker.services.deks import DekLimits, DekProvider
from broker.services.envelope import (
    DecryptItem,
    EnvelopeLimits,
    EnvelopeService,
    Opened,
    Sealed,
    SeedOpened,
)
from broker.services.keys import KeyRegistry, ResolvedKey
from broker.services.seed import SEED_OVERHEAD_BYTES, SeedItem

if TYPE_CHECKING:
    from collections.abc import Mapping

ARN = "arn:aws:kms:us-east-1:123456789012:key/2d9c0b1e-0000-4000-8000-000000000001"
LIMITS = EnvelopeLimits(max_plaintext_bytes=1024, max_batch_items=8)


@dataclass
class SeedKms:
    """The KMS key the seed wrapped DEKs with; records every unwrap and what it returned."""

    scheme: str = "aws-kms"
    key: bytes = field(default_factory=lambda: AESGCM.generate_key(bit_length=256))
    unwraps: list[tuple[str, int, bytes, dict[str, str]]] = field(default_factory=list)
    returned: list[bytearray] = field(default_factory=list)
    error: Exception | None = None
    short_dek: bool = False

    def wrap(self, dek: bytes) -> bytes:
        """What the seed's KMS returned for a DEK: nonce ‖ AES-GCM(key, DEK), no context."""
        nonce = os.urandom(12)
        return nonce + AESGCM(self.key).encrypt(nonce, dek, None)

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Open a wrapped DEK, or fail as configured."""
        self.unwraps.append((key_id, key_version, wrapped, dict(context)))
        if self.error is not None:
            raise self.error
        try:
            dek = bytearray(AESGCM(self.key).decrypt(wrapped[:12], wrapped[12:], None))
        except InvalidTag:
            raise KmsInvalidCiphertextError from None
        if self.short_dek:
            del dek[16:]
        self.returned.append(dek)
        return dek


@dataclass
class OtherBackend:
    """A backend of another scheme; any unwrap would be a bug."""

    scheme: str

    async def unwrap(self, *_: object) -> bytearray:
        """Fail the test."""
        raise AssertionError("unwrap called")


def seed_envelope(kms: SeedKms, plaintext: bytes, **changes: str) -> bytes:
    """The base64 text the seed stored for plaintext, its DEK wrapped by `kms`."""
    dek = os.urandom(32)
    nonce = os.urandom(12)
    record = {
        "version": 1,
        "encrypted_dek": base64.b64encode(kms.wrap(dek)).decode(),
        "key_id": ARN,
        "encrypted_data": base64.b64encode(
            nonce + AESGCM(dek).encrypt(nonce, plaintext, None)
        ).decode(),
        "algorithm": "AES-256-GCM",
        "timestamp": "2026-04-08T12:00:00+00:00",
        **changes,
    }
    return base64.b64encode(json.dumps(record).encode())


@pytest.fixture
def kms() -> SeedKms:
    """The seed's KMS key."""
    return SeedKms()


@pytest.fixture
def service(fakes: Fakes, kms: SeedKms) -> EnvelopeService:
    """The service over the seed's AWS key and keys that cannot open seed envelopes.

    Keys: legacy (the seed's AWS key), dev (local), hsm (pkcs11), multi (also_wrap), and the
    fakes' default, payments (envelope) and signing keys.
    """
    keys = [
        ResolvedKey("legacy", f"aws-kms://{ARN}", "envelope", kms, ARN),
        ResolvedKey("dev", "local://dev-key", "envelope", OtherBackend("local"), "dev-key"),
        ResolvedKey("hsm", "pkcs11://token/kek", "envelope", OtherBackend("pkcs11"), "token/kek"),
        ResolvedKey("multi", f"aws-kms://{ARN}", "envelope", OtherBackend("multi"), "multi"),
        *fakes.resolved_keys(),
    ]
    registry = KeyRegistry({k.name: k for k in keys})
    deks = DekProvider(DekLimits(), clock=fakes.clock)
    return EnvelopeService(registry, deks, fakes.authz, LIMITS, fakes.clock, audit=fakes.audit)


async def open_one(service: EnvelopeService, item: SeedItem) -> SeedOpened | Exception:
    """Open one item; its result or its error."""
    (result,) = await service.open_seed(CALLER, [item])
    return result


def assert_fixed(result: object) -> None:
    """The one decryption failure, whatever step failed."""
    assert isinstance(result, DecryptionFailedError)
    assert result.message == DECRYPTION_FAILED_MESSAGE


class TestOpen:
    """What the seed sealed comes back, or is resealed without leaving the service."""

    async def test_plaintext(self, service, kms, fakes):
        """The DEK is unwrapped as the seed wrapped it: version 0, no context; one audit record."""
        envelope = seed_envelope(kms, b"card 4111")

        result = await open_one(service, SeedItem(envelope, "legacy"))

        assert result == SeedOpened("legacy", 0, b"card 4111")
        [(key_id, version, _, context)] = kms.unwraps
        assert (key_id, version, context) == (ARN, 0, {})
        assert fakes.authz.decisions == [Decision(CALLER, "legacy", "decrypt", {}, allowed=True)]
        assert [(r.operation, r.key, r.key_version, r.error) for r in fakes.audit.records] == [
            ("decrypt", "legacy", 0, None)
        ]

    async def test_dek_is_wiped(self, service, kms):
        """The unwrapped DEK buffer is zeroed once the payload is open."""
        await open_one(service, SeedItem(seed_envelope(kms, b"x"), "legacy"))

        assert kms.returned == [bytearray(32)]

    async def test_reseal(self, service, kms, fakes):
        """With reseal_key the answer is a broker envelope that Decrypt opens with the context."""
        item = SeedItem(seed_envelope(kms, b"card"), "legacy", "payments", {"tenant": "a"})

        result = await open_one(service, item)

        assert isinstance(result, SeedOpened)
        assert result.plaintext == b""
        sealed = result.resealed
        assert isinstance(sealed, Sealed)
        assert (sealed.key, sealed.key_version) == ("payments", 1)
        (opened,) = await service.decrypt(CALLER, [DecryptItem(sealed.ciphertext, {"tenant": "a"})])
        assert opened == Opened(b"card", "payments", 1)
        assert fakes.authz.decisions[:2] == [
            Decision(CALLER, "legacy", "decrypt", {}, allowed=True),
            Decision(CALLER, "payments", "encrypt", {"tenant": "a"}, allowed=True),
        ]


class TestFixedFailure:
    """Every way an envelope fails to open gives the same error."""

    @pytest.mark.parametrize(
        "changes",
        [
            {"algorithm": "AES-128-CBC"},
            {"encrypted_dek": "not base64"},
            {"encrypted_data": base64.b64encode(bytes(40)).decode()},
        ],
        ids=["algorithm", "dek-not-base64", "tampered-data"],
    )
    async def test_bad_envelope(self, service, kms, changes):
        """A malformed or tampered envelope is the fixed DecryptionFailedError."""
        assert_fixed(
            await open_one(service, SeedItem(seed_envelope(kms, b"x", **changes), "legacy"))
        )

    async def test_not_an_envelope(self, service):
        """Bytes that are no seed envelope at all fail the same way, with no KMS call."""
        assert_fixed(await open_one(service, SeedItem(b"%%%", "legacy")))

    @pytest.mark.parametrize(
        "error", [KmsInvalidCiphertextError(), KmsKeyNotFoundError()], ids=["invalid", "no-key"]
    )
    async def test_kms_refuses_the_wrapped_dek(self, service, kms, error):
        """The KMS rejecting the wrapped DEK (another key wrapped it) is the fixed error too."""
        kms.error = error

        assert_fixed(await open_one(service, SeedItem(seed_envelope(kms, b"x"), "legacy")))

    async def test_dek_of_wrong_length(self, service, kms):
        """A KMS answer that is not a 32-byte DEK is refused, and wiped."""
        kms.short_dek = True

        assert_fixed(await open_one(service, SeedItem(seed_envelope(kms, b"x"), "legacy")))
        assert kms.returned == [bytearray(16)]

    async def test_kms_unavailable_fails_the_call(self, service, kms):
        """An unreachable KMS is not an envelope failure: it fails the request (retryable)."""
        kms.error = KmsUnavailableError()

        with pytest.raises(KmsUnavailableError):
            await service.open_seed(CALLER, [SeedItem(seed_envelope(kms, b"x"), "legacy")])


class TestPolicyFirst:
    """Authorization comes before any key lookup and any KMS call."""

    async def test_denied_decrypt(self, service, kms, fakes):
        """A caller without decrypt on the key is denied before the KMS is asked."""
        fakes.authz.deny(operation="decrypt", key="legacy")

        result = await open_one(service, SeedItem(seed_envelope(kms, b"x"), "legacy"))

        assert isinstance(result, PermissionDeniedError)
        assert kms.unwraps == []

    async def test_denied_reseal(self, service, kms, fakes):
        """A caller without encrypt on reseal_key is denied before the KMS is asked."""
        fakes.authz.deny(operation="encrypt", key="payments")

        item = SeedItem(seed_envelope(kms, b"x"), "legacy", "payments")
        result = await open_one(service, item)

        assert isinstance(result, PermissionDeniedError)
        assert kms.unwraps == []

    async def test_unknown_key_is_denied_not_revealed(self, service, fakes, kms):
        """A denied caller learns nothing of which keys exist."""
        fakes.authz.deny(key="nope")

        result = await open_one(service, SeedItem(seed_envelope(kms, b"x"), "nope"))

        assert isinstance(result, PermissionDeniedError)

    @pytest.mark.parametrize(
        ("key", "reseal_key", "error"),
        [
            ("nope", "", KeyNotFoundError),
            ("legacy", "nope", KeyNotFoundError),
            ("legacy", "signing", WrongKeyPurposeError),
        ],
        ids=["key", "reseal-key", "reseal-purpose"],
    )
    async def test_keys_looked_up_before_the_kms(self, service, kms, key, reseal_key, error):
        """An unknown or unfit key of an allowed caller fails before any KMS call."""
        result = await open_one(service, SeedItem(seed_envelope(kms, b"x"), key, reseal_key))

        assert type(result) is error
        assert kms.unwraps == []


class TestRefused:
    """Requests and keys that can never open a seed envelope."""

    @pytest.mark.parametrize(
        ("key", "match"),
        [
            ("dev", "application's master key"),
            ("hsm", "only AWS KMS, Cloud KMS and Vault transit keys"),
            ("multi", "also_wrap"),
            ("default", "only AWS KMS, Cloud KMS and Vault transit keys"),
        ],
    )
    async def test_keys_that_held_no_seed_dek(self, service, kms, key, match):
        """local://, other backends and multi-wrap keys are FAILED_PRECONDITION, said why."""
        result = await open_one(service, SeedItem(seed_envelope(kms, b"x"), key))

        assert isinstance(result, KeyStateError)
        assert match in result.message

    async def test_oversize_envelope(self, service, fakes):
        """An envelope over max_plaintext_bytes + the fixed overhead names the limit."""
        limit = LIMITS.max_plaintext_bytes + SEED_OVERHEAD_BYTES

        result = await open_one(service, SeedItem(bytes(limit + 1), "legacy"))

        assert isinstance(result, InvalidRequestError)
        assert f"limit of {limit} bytes" in result.message
        assert fakes.authz.decisions == []

    async def test_envelope_at_the_limit_is_parsed(self, service):
        """An envelope of exactly the limit reaches the parser (and fails as any bad one)."""
        limit = LIMITS.max_plaintext_bytes + SEED_OVERHEAD_BYTES

        assert_fixed(await open_one(service, SeedItem(b"A" * limit, "legacy")))

    async def test_context_without_reseal_key(self, service, kms):
        """A context is for the resealed envelope; without reseal_key it is a mistake."""
        item = SeedItem(seed_envelope(kms, b"x"), "legacy", context={"tenant": "a"})

        result = await open_one(service, item)

        assert isinstance(result, InvalidRequestError)
        assert "reseal_key" in result.message

    async def test_resealed_plaintext_over_the_limit(self, service, kms):
        """Resealing goes through the encrypt limits: a larger plaintext is refused."""
        big = seed_envelope(kms, bytes(LIMITS.max_plaintext_bytes + 1))

        result = await open_one(service, SeedItem(big, "legacy", "payments"))

        assert isinstance(result, InvalidRequestError)
        assert "server.max_plaintext_bytes" in result.message
