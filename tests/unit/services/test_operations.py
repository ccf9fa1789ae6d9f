from __future__ import annotations

from dataclasses import dataclass

import pytest
from unit.services.fakes import CALLER, Decision

from broker.errors import (
    BrokerError,
    InvalidRequestError,
    KeyNotFoundError,
    KmsUnavailableError,
    PermissionDeniedError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.services.asymmetric import AsymmetricService
from broker.services.hashing import HashingService, IndexItem, MacItem
from broker.services.kdf import HkdfItem, KeyDerivationService
from broker.services.signing import SigningService, SignItem, VerifyItem


@dataclass(frozen=True)
class Done:
    """A keyed result, as a service would return."""

    key: str
    key_version: int


class TestOperations:
    """Operations: bounds, authorize-then-lookup, batches and the audit trail for every service."""

    def test_oversize_data_is_refused_naming_the_limit(self, ops):
        """Data over the limit is InvalidRequest naming server.max_plaintext_bytes."""
        with pytest.raises(InvalidRequestError) as caught:
            ops.check_data(bytes(257), "digest")
        assert caught.value.message == (
            "digest is larger than the limit of 256 bytes (server.max_plaintext_bytes)"
        )
        ops.check_data(bytes(256))

    def test_oversize_batch_is_refused_naming_the_limit(self, ops):
        """A batch over the limit is InvalidRequest naming server.max_batch_items."""
        with pytest.raises(InvalidRequestError) as caught:
            ops.check_batch(5)
        assert caught.value.message == "batch has 5 items; the limit is 4 (server.max_batch_items)"
        ops.check_batch(4)

    def test_key_is_authorized_then_looked_up(self, ops, fakes):
        """A resolved key comes after one allowed decision on its name, operation and context."""
        key = ops.key(CALLER, "signing", "sign", ("signing",), {"a": "b"})
        assert (key.name, key.purpose) == ("signing", "signing")
        assert fakes.authz.decisions == [
            Decision(CALLER, "signing", "sign", {"a": "b"}, allowed=True)
        ]

    def test_denied_unknown_key_is_permission_denied(self, ops, fakes):
        """A denying policy hides whether the key exists."""
        fakes.authz.deny(key="ghost")
        with pytest.raises(PermissionDeniedError):
            ops.key(CALLER, "ghost", "sign", ("signing",))

    def test_allowed_unknown_key_is_key_not_found(self, ops):
        """Only after authorization does a missing key show as KeyNotFound."""
        with pytest.raises(KeyNotFoundError):
            ops.key(CALLER, "ghost", "sign", ("signing",))

    def test_malformed_name_never_reaches_the_policy(self, ops, fakes):
        """A name that cannot be a key is InvalidRequest before any decision."""
        with pytest.raises(InvalidRequestError):
            ops.key(CALLER, "no spaces", "sign", ("signing",))
        assert fakes.authz.decisions == []

    def test_key_of_another_purpose(self, ops):
        """An existing key of another purpose is WrongKeyPurpose."""
        with pytest.raises(WrongKeyPurposeError):
            ops.key(CALLER, "default", "sign", ("signing",))

    def test_keyless_operations_are_authorized_with_an_empty_key(self, ops, fakes):
        """Tokens and digests ask the policy about key ""."""
        ops.authorize(CALLER, "token")
        assert fakes.authz.decisions == [Decision(CALLER, "", "token", {}, allowed=True)]

    async def test_batch_turns_user_errors_into_results_in_order(self, ops):
        """Failed items become their errors, in item order, beside the results of the others."""

        async def one(n: int) -> Done:
            if n % 2:
                raise VerificationFailedError
            return Done("k", n)

        results = await ops.batch("verify", [0, 1, 2, 3], one)
        assert [type(r) for r in results] == [
            Done,
            VerificationFailedError,
            Done,
            VerificationFailedError,
        ]

    async def test_batch_audits_each_outcome_exactly_once(self, ops, fakes):
        """Every item's outcome reaches the audit sink once, success or failure."""

        async def one(n: int) -> Done:
            if n == 1:
                raise PermissionDeniedError
            return Done("k", 7)

        await ops.batch("sign", [0, 1, 2], one)
        outcomes = sorted(
            (r.operation, r.key, r.key_version, type(r.error).__name__) for r in fakes.audit.records
        )
        assert outcomes == [
            ("sign", "", 0, "PermissionDeniedError"),
            ("sign", "k", 7, "NoneType"),
            ("sign", "k", 7, "NoneType"),
        ]

    async def test_kms_errors_fail_the_whole_batch(self, ops):
        """A KMS failure is not an item result: the request fails."""

        async def one(n: int) -> Done:
            if n == 1:
                raise KmsUnavailableError
            return Done("k", 1)

        with pytest.raises(KmsUnavailableError):
            await ops.batch("hmac", [0, 1, 2], one)

    async def test_oversize_batch_runs_no_item(self, ops, fakes):
        """A refused batch runs and audits nothing."""
        ran = []

        async def one(n: int) -> Done:
            ran.append(n)
            return Done("k", 1)

        with pytest.raises(InvalidRequestError):
            await ops.batch("sign", range(5), one)
        assert (ran, fakes.audit.records) == ([], [])

    async def test_audited_records_a_failure_and_reraises(self, ops, fakes):
        """A single operation that fails is audited with its error, then raised."""

        async def fail() -> Done:
            raise WrongKeyPurposeError

        with pytest.raises(WrongKeyPurposeError):
            await ops.audited("derive", fail())
        assert fakes.audit.errors() == [WrongKeyPurposeError]


async def _single(work):
    """Await a service call; a one-item batch's error result is raised like a unary error."""
    result = await work
    if isinstance(result, list):
        (result,) = result
    if isinstance(result, BrokerError):
        raise result
    return result


# Every keyed operation, each called the way its service offers it, under a given key name.
CALLS = {
    "sign": lambda s, k: s.signing.sign(CALLER, [SignItem(k, b"m")]),
    "verify": lambda s, k: s.signing.verify(CALLER, [VerifyItem(k, b"m", b"sig")]),
    "public_key": lambda s, k: s.signing.public_key(CALLER, k, 0),
    "hmac": lambda s, k: s.hashing.hmac(CALLER, [MacItem(k, b"m")]),
    "hmac_verify": lambda s, k: s.hashing.verify_hmac(CALLER, MacItem(k, b"m", bytes(32))),
    "blind_index": lambda s, k: s.hashing.blind_index(CALLER, [IndexItem(k, "email", "t", b"v")]),
    "hkdf": lambda s, k: s.kdf.hkdf(CALLER, HkdfItem(k)),
    "rsa_encrypt": lambda s, k: s.rsa.encrypt(CALLER, k, b"m"),
    "rsa_decrypt": lambda s, k: s.rsa.decrypt(CALLER, k, bytes(256)),
}
# The key each operation normally uses.
OWN_KEY = {
    "sign": "signing",
    "verify": "signing",
    "public_key": "signing",
    "hmac": "hmac",
    "hmac_verify": "hmac",
    "blind_index": "hmac",
    "hkdf": "secret",
    "rsa_encrypt": "rsa",
    "rsa_decrypt": "rsa",
}


@dataclass
class Services:
    """The key-operation services, all on one Operations instance."""

    signing: SigningService
    hashing: HashingService
    kdf: KeyDerivationService
    rsa: AsymmetricService


@pytest.fixture
def services(ops, pool) -> Services:
    """Every key-operation service over the shared fakes."""
    return Services(
        SigningService(ops),
        HashingService(ops),
        KeyDerivationService(ops, pool),
        AsymmetricService(ops),
    )


@pytest.mark.parametrize("operation", sorted(CALLS))
class TestEveryKeyOperation:
    """Each key-operation service inherits the same rules from Operations."""

    async def test_envelope_key_is_wrong_purpose(self, services, fakes, operation):
        """Using an envelope key for a key operation is WrongKeyPurpose, and audited."""
        with pytest.raises(WrongKeyPurposeError):
            await _single(CALLS[operation](services, "default"))
        assert fakes.audit.errors() == [WrongKeyPurposeError]
        assert fakes.kms_calls() == 0

    async def test_denied_unknown_key_is_permission_denied(self, services, fakes, operation):
        """A denying policy answers PermissionDenied for a key that does not exist."""
        fakes.authz.deny(key="ghost")
        with pytest.raises(PermissionDeniedError):
            await _single(CALLS[operation](services, "ghost"))

    async def test_allowed_unknown_key_is_key_not_found(self, services, operation):
        """An allowed caller learns that the key does not exist."""
        with pytest.raises(KeyNotFoundError):
            await _single(CALLS[operation](services, "ghost"))

    async def test_denied_own_key_reaches_no_backend(self, services, fakes, operation):
        """A denied caller gets PermissionDenied and no backend is called."""
        fakes.authz.deny(key=OWN_KEY[operation])
        with pytest.raises(PermissionDeniedError):
            await _single(CALLS[operation](services, OWN_KEY[operation]))
        assert fakes.kms_calls() == 0

    async def test_backend_outage_is_kms_unavailable(self, services, fakes, operation):
        """When the key's backend is down the request fails with KmsUnavailable."""
        for backend in fakes.backends():
            backend.down = True
        with pytest.raises(KmsUnavailableError):
            await _single(CALLS[operation](services, OWN_KEY[operation]))
