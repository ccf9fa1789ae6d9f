"""Resilience for the key operations a remote backend offers beyond envelope wrapping.

Services find a backend's abilities with `isinstance` on the runtime-checkable protocols of
broker/kms/base.py, so a wrapper must have exactly the methods its backend has: a
`ResilientBackend` around a backend that cannot sign must not look like a SigningBackend.
`resilient()` therefore builds the wrapper from one forwarding class per protocol the inner
backend implements. Every forwarded call gets the same deadline, retries, circuit breaker and
rate limit as wrapping does; a verification failure or a refused input is an answer from
the KMS (final, and it keeps the breaker closed), never a retry.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from typing import TYPE_CHECKING, cast

from broker.kms.base import DecryptionBackend, MacBackend, SecretBackend, SigningBackend
from broker.kms.resilience import ResilientBackend

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker.kms.base import (
        Decryption,
        DerivedSecret,
        KmsBackend,
        MacResult,
        PublicKeyBackend,
        PublicKeyInfo,
        SignResult,
    )
    from broker.kms.resilience import ResilienceSettings

__all__ = ["resilient"]


class _PublicKeys(ResilientBackend):
    """Forwards PublicKeyBackend."""

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """A public key; retried."""
        inner = cast("PublicKeyBackend", self.inner)
        return await self._call(lambda: inner.public_key(key_id, key_version))


class _Signing(_PublicKeys):
    """Forwards SigningBackend."""

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """Sign; retried, since a second signature of the same input harms nothing."""
        inner = cast("SigningBackend", self.inner)
        return await self._call(lambda: inner.sign(key_id, message, prehashed=prehashed))

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """Verify; retried, but an invalid signature is final."""
        inner = cast("SigningBackend", self.inner)
        return await self._call(
            lambda: inner.verify(key_id, key_version, message, signature, prehashed=prehashed)
        )


class _Decryption(_PublicKeys):
    """Forwards DecryptionBackend."""

    async def decrypt(
        self, key_id: str, key_version: int, ciphertext: bytes, label: bytes
    ) -> Decryption:
        """Decrypt; retried, but a ciphertext that does not open is final."""
        inner = cast("DecryptionBackend", self.inner)
        return await self._call(lambda: inner.decrypt(key_id, key_version, ciphertext, label))


class _Mac(ResilientBackend):
    """Forwards MacBackend."""

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """An HMAC; retried."""
        inner = cast("MacBackend", self.inner)
        return await self._call(lambda: inner.mac(key_id, data, key_version=key_version))

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """Check an HMAC; retried, but a mismatch is final."""
        inner = cast("MacBackend", self.inner)
        return await self._call(lambda: inner.verify_mac(key_id, key_version, data, mac))

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """A blind-index MAC; retried."""
        inner = cast("MacBackend", self.inner)
        return await self._call(lambda: inner.derived_mac(key_id, label, data, length))


class _Secrets(ResilientBackend):
    """Forwards SecretBackend."""

    async def derive(self, key_id: str, *, salt: bytes, info: bytes, length: int) -> DerivedSecret:
        """Derived key material; retried."""
        inner = cast("SecretBackend", self.inner)
        return await self._call(lambda: inner.derive(key_id, salt=salt, info=info, length=length))


_FORWARDERS: tuple[tuple[type, type[ResilientBackend]], ...] = (
    (SigningBackend, _Signing),
    (DecryptionBackend, _Decryption),
    (MacBackend, _Mac),
    (SecretBackend, _Secrets),
)


@functools.cache
def _wrapper_class(bases: tuple[type[ResilientBackend], ...]) -> type[ResilientBackend]:
    """One class per combination of abilities, made once."""
    if not bases:
        return ResilientBackend
    if len(bases) == 1:
        return bases[0]
    names = "".join(b.__name__.strip("_") for b in bases)
    doc = "ResilientBackend forwarding " + ", ".join(b.__name__.strip("_") for b in bases)
    return type(f"Resilient{names}", bases, {"__doc__": doc})


def resilient(
    inner: KmsBackend,
    settings: ResilienceSettings | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
) -> ResilientBackend:
    """Wrap a backend for resilience, forwarding exactly the key operations it implements."""
    bases = tuple(cls for protocol, cls in _FORWARDERS if isinstance(inner, protocol))
    return _wrapper_class(bases)(inner, settings, clock=clock, sleep=sleep, jitter=jitter)
