"""resilient(): the wrapper forwards exactly the key operations its backend has, resiliently."""

from __future__ import annotations

import pytest
from unit.kms.test_resilience import FakeBackend, FakeClock, down

from broker.errors import InvalidRequestError, KmsUnavailableError, VerificationFailedError
from broker.kms.base import (
    Decryption,
    DecryptionBackend,
    DerivedSecret,
    MacBackend,
    MacResult,
    PublicKeyBackend,
    PublicKeyInfo,
    SecretBackend,
    SigningBackend,
    SignResult,
)
from broker.kms.resilience import ResilienceSettings, ResilientBackend
from broker.kms.resilient_ops import resilient

PEM = PublicKeyInfo("PEM", 1, "ecdsa-p384-sha384")


class SigningFake(FakeBackend):
    """A scripted backend that also signs."""

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """Scripted."""
        await self._next(key_id, key_version)
        return PEM

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """Scripted."""
        await self._next(key_id, message, prehashed)
        return SignResult(b"sig", 1, "ecdsa-p384-sha384")

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """Scripted."""
        await self._next(key_id, key_version, message, signature, prehashed)
        return 1


class MacFake(FakeBackend):
    """A scripted backend that computes HMACs."""

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """Scripted."""
        await self._next(key_id, data, key_version)
        return MacResult(b"mac", key_version or 1)

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """Scripted."""
        await self._next(key_id, key_version, data, mac)
        return 1

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """Scripted."""
        await self._next(key_id, label, data, length)
        return MacResult(b"i" * length, 1)


class EverythingFake(SigningFake, MacFake):
    """A scripted backend with every key operation (like the local keyring)."""

    async def decrypt(
        self, key_id: str, key_version: int, ciphertext: bytes, label: bytes
    ) -> Decryption:
        """Scripted."""
        await self._next(key_id, key_version, ciphertext, label)
        return Decryption(b"plain", 1)

    async def derive(self, key_id: str, *, salt: bytes, info: bytes, length: int) -> DerivedSecret:
        """Scripted."""
        await self._next(key_id, salt, info, length)
        return DerivedSecret(b"k" * length, 1)


def wrap(inner: FakeBackend, **settings: float) -> tuple[ResilientBackend, FakeClock]:
    """A resilient wrapper on a fake clock with jitter pinned to its maximum."""
    clock = FakeClock()
    limits = ResilienceSettings(**settings)  # type: ignore[arg-type]
    return resilient(inner, limits, clock=clock, sleep=clock.sleep, jitter=lambda: 1.0), clock


class TestAbilities:
    """isinstance on the protocols sees through the wrapper, no more and no less."""

    @pytest.mark.parametrize(
        ("inner", "expected"),
        [
            pytest.param(FakeBackend(), set(), id="envelope-only"),
            pytest.param(SigningFake(), {SigningBackend, PublicKeyBackend}, id="signing"),
            pytest.param(MacFake(), {MacBackend}, id="hmac"),
            pytest.param(
                EverythingFake(),
                {SigningBackend, PublicKeyBackend, DecryptionBackend, MacBackend, SecretBackend},
                id="everything",
            ),
        ],
    )
    def test_wrapper_mirrors_the_backend(self, inner, expected):
        """Each protocol holds for the wrapper exactly when it holds for the backend."""
        wrapped, _ = wrap(inner)
        protocols = {
            SigningBackend,
            PublicKeyBackend,
            DecryptionBackend,
            MacBackend,
            SecretBackend,
        }
        assert {p for p in protocols if isinstance(wrapped, p)} == expected
        assert isinstance(wrapped, ResilientBackend)
        assert wrapped.scheme == "fake"

    def test_one_class_per_combination(self):
        """Wrappers of backends with the same abilities share their class."""
        first, _ = wrap(EverythingFake())
        second, _ = wrap(EverythingFake())
        assert type(first) is type(second)
        assert type(first) is not type(wrap(SigningFake())[0])


class TestRules:
    """Forwarded calls get the deadline, retries and breaker of wrapping."""

    async def test_sign_is_retried_when_unavailable(self):
        """Two unavailable attempts, then a signature."""
        inner = SigningFake([down(), down(), None])
        wrapped, _ = wrap(inner)
        assert isinstance(wrapped, SigningBackend)
        assert (await wrapped.sign("k", b"m", prehashed=False)).signature == b"sig"
        assert (inner.calls, wrapped.counters.retries) == (3, 2)

    @pytest.mark.parametrize(
        "error", [VerificationFailedError(), InvalidRequestError("digest must be 48 bytes")]
    )
    async def test_answers_are_final_and_close_the_breaker(self, error):
        """A failed verification is the KMS answering: no retry, the breaker stays closed."""
        inner = SigningFake([error])
        wrapped, _ = wrap(inner, breaker_failures=1)
        assert isinstance(wrapped, SigningBackend)
        with pytest.raises(type(error)):
            await wrapped.verify("k", 0, b"m", b"sig", prehashed=False)
        assert (inner.calls, wrapped.state) == (1, "closed")

    async def test_open_breaker_fails_every_operation_fast(self):
        """Once signing opened the breaker, HMAC calls fail without reaching the backend."""
        inner = EverythingFake([down()])
        wrapped, clock = wrap(inner, breaker_failures=1, max_attempts=1)
        assert isinstance(wrapped, MacBackend)
        with pytest.raises(KmsUnavailableError):
            await wrapped.mac("k", b"x")
        with pytest.raises(KmsUnavailableError, match="circuit open"):
            await wrapped.verify_mac("k", 0, b"x", b"mac")
        assert inner.calls == 1
        clock.now += 10
        assert await wrapped.verify_mac("k", 0, b"x", b"mac") == 1

    async def test_every_operation_reaches_the_backend(self):
        """Arguments pass through unchanged."""
        inner = EverythingFake()
        wrapped, _ = wrap(inner)
        assert isinstance(wrapped, SigningBackend)
        assert isinstance(wrapped, DecryptionBackend)
        assert isinstance(wrapped, MacBackend)
        assert isinstance(wrapped, SecretBackend)
        assert (await wrapped.public_key("k", 2)) is PEM
        assert await wrapped.verify("k", 0, b"m", b"s", prehashed=True) == 1
        assert (await wrapped.decrypt("k", 1, b"c", b"l")).plaintext == b"plain"
        assert (await wrapped.mac("k", b"d", key_version=3)).key_version == 3
        assert (await wrapped.derived_mac("k", b"label", b"v", 16)).mac == b"i" * 16
        assert (await wrapped.derive("k", salt=b"s", info=b"i", length=8)).key == b"k" * 8
        assert inner.seen == [
            ("k", 2),
            ("k", 0, b"m", b"s", True),
            ("k", 1, b"c", b"l"),
            ("k", b"d", 3),
            ("k", b"label", b"v", 16),
            ("k", b"s", b"i", 8),
        ]
