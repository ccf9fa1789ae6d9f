"""Plumbing shared by the key-operation services (signing, asymmetric, hashing, KDF, tokens).

Batch-first like the envelope service: user errors become per-item results, KMS and
internal errors fail the whole request, and every item's outcome reaches the audit sink.
Keys are resolved in one order everywhere: check the name's format, authorize, look up,
then check the key's purpose, so an unauthorized caller cannot learn which keys exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from broker.errors import BrokerError, InvalidRequestError, KmsError, WrongKeyPurposeError
from broker.services.audit import NO_AUDIT
from broker.services.keys import check_key_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

    from broker.policy.authorizer import Authorizer, Caller
    from broker.services.audit import AuditSink
    from broker.services.keys import KeyRegistry, ResolvedKey

__all__ = ["KeyedResult", "OperationLimits", "Operations"]


class KeyedResult(Protocol):
    """A result naming the key version it used (for the audit trail)."""

    @property
    def key(self) -> str:
        """The logical key name ("" for keyless operations)."""
        ...

    @property
    def key_version(self) -> int:
        """The key version used (0 for keyless operations)."""
        ...


T = TypeVar("T")
R = TypeVar("R", bound=KeyedResult)


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """Request bounds shared with the envelope service (server.* settings)."""

    max_data_bytes: int = 4 << 20
    max_batch_items: int = 1000


class Operations:
    """Authorization, key resolution, bounds and batch execution for one service."""

    def __init__(
        self,
        keys: KeyRegistry,
        authorizer: Authorizer,
        limits: OperationLimits,
        audit: AuditSink = NO_AUDIT,
    ) -> None:
        """Wire the narrow interfaces every key-operation service needs."""
        self._keys = keys
        self._authz = authorizer
        self.limits = limits
        self._audit = audit

    def check_data(self, data: bytes, what: str = "data") -> None:
        """Refuse input over server.max_plaintext_bytes, naming the limit."""
        limit = self.limits.max_data_bytes
        if len(data) > limit:
            raise InvalidRequestError(
                f"{what} is larger than the limit of {limit} bytes (server.max_plaintext_bytes)"
            )

    def check_batch(self, count: int) -> None:
        """Refuse batches over server.max_batch_items, naming the limit."""
        limit = self.limits.max_batch_items
        if count > limit:
            raise InvalidRequestError(
                f"batch has {count} items; the limit is {limit} (server.max_batch_items)"
            )

    def authorize(
        self,
        caller: Caller,
        operation: str,
        key: str = "",
        context: Mapping[str, str] | None = None,
    ) -> None:
        """Ask the policy; keyless operations are authorized with an empty key name."""
        self._authz.authorize(caller, key=key, operation=operation, context=context or {})

    def key(
        self,
        caller: Caller,
        name: str,
        operation: str,
        purposes: Collection[str],
        context: Mapping[str, str] | None = None,
    ) -> ResolvedKey:
        """Authorize, then look up: WrongKeyPurposeError when the key serves another purpose."""
        check_key_name(name)
        self.authorize(caller, operation, name, context)
        key = self._keys.get(name, purpose=None)
        if key.purpose not in purposes:
            raise WrongKeyPurposeError
        return key

    async def batch(
        self, operation: str, items: Sequence[T], one: Callable[[T], Awaitable[R]]
    ) -> list[R | BrokerError]:
        """Run items concurrently; user errors become results, other errors fail the batch."""
        self.check_batch(len(items))

        async def guarded(item: T) -> R | BrokerError:
            try:
                return await self.audited(operation, one(item))
            except KmsError:
                raise
            except BrokerError as exc:
                return exc

        return list(await asyncio.gather(*(guarded(i) for i in items)))

    async def audited(self, operation: str, work: Awaitable[R]) -> R:
        """Await one operation and tell the audit sink how it ended."""
        try:
            result = await work
        except Exception as exc:
            self._audit.item(operation, key="", key_version=0, error=exc)
            raise
        self._audit.item(operation, key=result.key, key_version=result.key_version, error=None)
        return result
