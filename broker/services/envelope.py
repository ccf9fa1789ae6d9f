"""Envelope encryption use cases: encrypt, decrypt, rewrap, data keys, leases and streams.

Batch-first: a single-item RPC is a batch of one. User errors (bad input, denied, unknown
key, undecryptable envelope) become per-item results; anything else (KMS down, internal)
fails the whole request. Authorization always runs before the key is looked up.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from broker.core.aead import AeadError
from broker.core.context import ContextError, canonical_context, parse_canonical_context
from broker.core.stream import StreamDecryptor, StreamEncryptor, open_stream
from broker.core.wire import (
    FORMAT_STREAM,
    FORMAT_V1,
    EnvelopeFormatError,
    Header,
    open_v1,
    parse_envelope,
    resolve_context,
    seal_v1,
)
from broker.errors import (
    BrokerError,
    DecryptionFailedError,
    InvalidRequestError,
    KeyNotFoundError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    WrongKeyPurposeError,
)
from broker.services.audit import NO_AUDIT
from broker.services.keys import check_key_name
from broker.services.seed import SeedItem, open_seed_envelope, seed_keys

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from broker.core.aead import DataKey
    from broker.policy.authorizer import Authorizer, Caller
    from broker.services.audit import AuditSink
    from broker.services.deks import DekProvider
    from broker.services.keys import KeyRegistry, ResolvedKey

__all__ = [
    "DecryptItem",
    "EncryptItem",
    "EnvelopeLimits",
    "EnvelopeService",
    "LeaseGrant",
    "Opened",
    "RewrapItem",
    "Sealed",
    "SeedOpened",
]


class _Keyed(Protocol):
    """A batch result naming the key version it used (for the audit trail)."""

    @property
    def key(self) -> str: ...
    @property
    def key_version(self) -> int: ...


T = TypeVar("T")
R = TypeVar("R", bound=_Keyed)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeLimits:
    """Request bounds and lease limits."""

    max_plaintext_bytes: int = 4 << 20
    max_batch_items: int = 1000
    lease_ttl_seconds: float = 300.0
    lease_max_messages: int = 1 << 20
    lease_max_bytes: int = 1 << 34


@dataclass(frozen=True, slots=True)
class EncryptItem:
    """One plaintext to seal."""

    key: str
    plaintext: bytes
    context: Mapping[str, str] = field(default_factory=dict)
    store_context: bool = False


@dataclass(frozen=True, slots=True)
class DecryptItem:
    """One envelope to open."""

    ciphertext: bytes
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RewrapItem:
    """One envelope to re-seal, optionally under another key."""

    ciphertext: bytes
    context: Mapping[str, str] = field(default_factory=dict)
    destination_key: str = ""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A new envelope."""

    ciphertext: bytes
    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class Opened:
    """A plaintext and the key that opened it."""

    plaintext: bytes
    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class SeedOpened:
    """A seed envelope opened by `key` (version 0: the KMS): its plaintext, or resealed."""

    key: str
    key_version: int
    plaintext: bytes = field(default=b"", repr=False)
    resealed: Sealed | None = None


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What a caller needs to seal format-1 envelopes locally."""

    data_key: bytes = field(repr=False)
    header_prefix: bytes
    aad_suffix: bytes
    key: str
    key_version: int
    expires_at: float
    max_messages: int
    max_bytes: int


def _canonical(context: Mapping[str, str]) -> bytes:
    try:
        return canonical_context(context)
    except ContextError as exc:
        raise InvalidRequestError(str(exc)) from None


def _parse(ciphertext: bytes) -> tuple[Header, bytes]:
    try:
        return parse_envelope(ciphertext)
    except EnvelopeFormatError:
        raise DecryptionFailedError from None


class EnvelopeService:
    """Seals and opens envelopes for authorized callers."""

    def __init__(  # noqa: PLR0913 - each argument is a narrow interface this use case needs
        self,
        keys: KeyRegistry,
        deks: DekProvider,
        authorizer: Authorizer,
        limits: EnvelopeLimits,
        wall_clock: Callable[[], float] = time.time,
        *,
        audit: AuditSink = NO_AUDIT,
    ) -> None:
        """Wire the narrow interfaces this use case needs."""
        self._keys = keys
        self._deks = deks
        self._authz = authorizer
        self._limits = limits
        self._wall = wall_clock
        self._audit = audit

    def _check_batch(self, n: int) -> None:
        if n > self._limits.max_batch_items:
            limit = self._limits.max_batch_items
            raise InvalidRequestError(
                f"batch has {n} items; the limit is {limit} (server.max_batch_items)"
            )

    def _check_size(self, plaintext: bytes) -> None:
        if len(plaintext) > self._limits.max_plaintext_bytes:
            limit = self._limits.max_plaintext_bytes
            raise InvalidRequestError(
                f"plaintext is larger than the limit of {limit} bytes "
                "(server.max_plaintext_bytes); use EncryptStream for large payloads"
            )

    def _key(self, caller: Caller, name: str, op: str, context: Mapping[str, str]) -> ResolvedKey:
        """Authorize, then look up: an unauthorized caller cannot learn which keys exist."""
        check_key_name(name)
        self._authz.authorize(caller, key=name, operation=op, context=context)
        return self._keys.get(name)

    async def _batch(
        self, operation: str, items: Sequence[T], one: Callable[[T], Awaitable[R]]
    ) -> list[R | BrokerError]:
        """Run items concurrently; user errors become results, other errors fail the batch.

        Each item's outcome goes to the audit sink before the batch answers.
        """
        self._check_batch(len(items))

        async def guarded(item: T) -> R | BrokerError:
            try:
                result = await one(item)
            except Exception as exc:
                self._audit.item(operation, key="", key_version=0, error=exc)
                if isinstance(exc, BrokerError) and not isinstance(exc, KmsError):
                    return exc
                raise
            self._audit.item(operation, key=result.key, key_version=result.key_version, error=None)
            return result

        return list(await asyncio.gather(*(guarded(i) for i in items)))

    async def encrypt(
        self, caller: Caller, items: Sequence[EncryptItem]
    ) -> list[Sealed | BrokerError]:
        """Seal each item under its key's current version."""
        return await self._batch(
            "encrypt", items, lambda i: self._encrypt_one(caller, i, "encrypt")
        )

    async def _encrypt_one(self, caller: Caller, item: EncryptItem, op: str) -> Sealed:
        canonical = _canonical(item.context)
        self._check_size(item.plaintext)
        key = self._key(caller, item.key, op, item.context)
        slot = await self._deks.for_encrypt(
            key, item.context, canonical, store=item.store_context, nbytes=len(item.plaintext)
        )
        envelope = seal_v1(slot.data_key, slot.prefix, item.plaintext, canonical)
        return Sealed(envelope, key.name, slot.key_version)

    async def decrypt(
        self, caller: Caller, items: Sequence[DecryptItem]
    ) -> list[Opened | BrokerError]:
        """Open each envelope with the context it was sealed with."""
        return await self._batch(
            "decrypt", items, lambda i: self._decrypt_one(caller, i, "decrypt")
        )

    async def _decrypt_one(self, caller: Caller, item: DecryptItem, op: str) -> Opened:
        presented = _canonical(item.context)
        header, body = _parse(item.ciphertext)
        key, context = self._open_key(caller, header, presented, op)
        dk = await self._dek_for(key, header, parse_canonical_context(context))
        try:
            if header.version == FORMAT_V1:
                plaintext = open_v1(dk, header, body, context)
            else:
                plaintext = open_stream(dk, header, body, context)
        except (AeadError, EnvelopeFormatError):
            raise DecryptionFailedError from None
        return Opened(plaintext, key.name, header.key_version)

    def _open_key(
        self, caller: Caller, header: Header, presented: bytes, op: str
    ) -> tuple[ResolvedKey, bytes]:
        """Resolve the effective context, authorize on it, then look the key up."""
        try:
            context = resolve_context(header, presented)
            mapping = parse_canonical_context(context)
        except (EnvelopeFormatError, ContextError):
            raise DecryptionFailedError from None
        self._authz.authorize(caller, key=header.key_name, operation=op, context=mapping)
        try:
            return self._keys.get(header.key_name), context
        except (KeyNotFoundError, WrongKeyPurposeError):
            raise DecryptionFailedError from None

    async def _dek_for(
        self, key: ResolvedKey, header: Header, context: Mapping[str, str]
    ) -> DataKey:
        try:
            return await self._deks.for_decrypt(key, header, context)
        except (KmsInvalidCiphertextError, KmsKeyNotFoundError):
            raise DecryptionFailedError from None

    async def rewrap(
        self, caller: Caller, items: Sequence[RewrapItem]
    ) -> list[Sealed | BrokerError]:
        """Re-seal each envelope under the current version of its (or another) key."""
        return await self._batch("rewrap", items, lambda i: self._rewrap_one(caller, i))

    async def _rewrap_one(self, caller: Caller, item: RewrapItem) -> Sealed:
        header, _ = _parse(item.ciphertext)
        opened = await self._decrypt_one(
            caller, DecryptItem(item.ciphertext, item.context), "rewrap"
        )
        context = item.context
        if header.stored_context is not None:
            context = parse_canonical_context(header.stored_context)
        target = item.destination_key or opened.key
        again = EncryptItem(target, opened.plaintext, context, header.stored_context is not None)
        return await self._encrypt_one(caller, again, "rewrap")

    async def open_seed(
        self, caller: Caller, items: Sequence[SeedItem]
    ) -> list[SeedOpened | BrokerError]:
        """Open envelopes ecl_crypto_utility sealed under a KMS key; reseal them if asked."""
        return await self._batch("decrypt", items, lambda i: self._open_seed_one(caller, i))

    async def _open_seed_one(self, caller: Caller, item: SeedItem) -> SeedOpened:
        """Authorize both keys first; reseal through the encrypt slots, like Encrypt."""
        canonical = _canonical(item.context)
        limit = self._limits.max_plaintext_bytes
        key, target = seed_keys(caller, item, self._authz, self._keys, limit)
        plaintext = await open_seed_envelope(key, item.envelope, limit)
        if target is None:
            return SeedOpened(key.name, 0, plaintext)
        self._check_size(plaintext)
        slot = await self._deks.for_encrypt(
            target, item.context, canonical, store=False, nbytes=len(plaintext)
        )
        envelope = seal_v1(slot.data_key, slot.prefix, plaintext, canonical)
        return SeedOpened(key.name, 0, resealed=Sealed(envelope, target.name, slot.key_version))

    async def generate_data_key(
        self, caller: Caller, key: str, context: Mapping[str, str]
    ) -> tuple[bytes, Sealed]:
        """A fresh 256-bit key and that key sealed as an envelope."""
        plaintext = os.urandom(32)
        sealed = await self._encrypt_one(caller, EncryptItem(key, plaintext, context), "datakey")
        return plaintext, sealed

    async def lease(self, caller: Caller, key_name: str, context: Mapping[str, str]) -> LeaseGrant:
        """A fresh content key and header prefix so the caller can seal locally, within limits."""
        canonical = _canonical(context)
        key = self._key(caller, key_name, "lease", context)
        new = await self._deks.fresh(key, context, None, FORMAT_V1)
        try:
            content_key = new.data_key.content_key()
        finally:
            new.data_key.wipe()
            new.twin.wipe()
        lim = self._limits
        return LeaseGrant(
            data_key=content_key,
            header_prefix=new.prefix,
            aad_suffix=canonical,
            key=key.name,
            key_version=new.key_version,
            expires_at=self._wall() + lim.lease_ttl_seconds,
            max_messages=lim.lease_max_messages,
            max_bytes=lim.lease_max_bytes,
        )

    async def open_encrypt_stream(
        self, caller: Caller, key_name: str, context: Mapping[str, str], *, store: bool
    ) -> tuple[StreamEncryptor, ResolvedKey, int]:
        """A streaming encryptor under a DEK of its own (stream sizes are not known up front)."""
        canonical = _canonical(context)
        key = self._key(caller, key_name, "encrypt", context)
        new = await self._deks.fresh(key, context, canonical if store else None, FORMAT_STREAM)
        new.twin.wipe()
        return StreamEncryptor(new.data_key, new.prefix, canonical), key, new.key_version

    async def open_decrypt_stream(
        self, caller: Caller, header: Header, context: Mapping[str, str]
    ) -> StreamDecryptor:
        """A streaming decryptor for a parsed format-2 header."""
        presented = _canonical(context)
        if header.version != FORMAT_STREAM:
            raise DecryptionFailedError
        key, effective = self._open_key(caller, header, presented, "decrypt")
        dk = await self._dek_for(key, header, parse_canonical_context(effective))
        try:
            return StreamDecryptor(dk, header, effective)
        except AeadError:
            raise DecryptionFailedError from None
