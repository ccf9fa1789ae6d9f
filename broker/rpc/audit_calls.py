"""Audit records and rate limits per call: the daemon's CallObserver, AuditSink and Authorizer.

A call's decisions are noted by the authorizer in the task that made them; a batch item's
task is its own, so the services' per-item outcome is joined with exactly that item's
decisions. Decisions no item claimed (non-batch RPCs, streams, admin) become one record each
when the call ends. Every record is written before the reply leaves, so with a fail-closed
audit log an operation whose record cannot be kept is not served.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.audit.log import AuditWriteError
from broker.errors import PermissionDeniedError, ResourceExhaustedError
from broker.policy.engine import decide
from broker.rpc.status import REQUEST_ID_METADATA_KEY, status_for

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.audit.log import AuditLog
    from broker.policy.authorizer import Caller
    from broker.policy.engine import PolicyHolder
    from broker.policy.model import Decision
    from broker.policy.ratelimit import RateLimiter

__all__ = [
    "RETRY_AFTER_METADATA_KEY",
    "AuditedCall",
    "CallAuditor",
    "PolicyAuthorizer",
    "RateLimitedError",
    "SecurityCounters",
]

RETRY_AFTER_METADATA_KEY = "retry-after-ms"
_CURRENT: ContextVar[AuditedCall | None] = ContextVar("keybroker_call", default=None)
_CALLER_FIELDS = ("uid", "pid", "exe", "spiffe_id")


class RateLimitedError(ResourceExhaustedError):
    """A rate limit of the policy refused the operation; retry after `retry_after_ms`."""

    reason = "RATE_LIMITED"

    def __init__(self, retry_after_ms: int) -> None:
        """The message is fixed; the wait travels as trailing metadata."""
        super().__init__()
        self.retry_after_ms = retry_after_ms


@dataclass
class SecurityCounters:
    """Decision and rate-limit counters, exported by broker/daemon/security_metrics.py."""

    allowed: int = 0
    denied: int = 0
    rate_limited: int = 0


@dataclass(slots=True)
class _Note:
    task: object
    key: str
    operation: str
    decision: Decision
    code: str = ""
    limit_id: str = ""
    written: bool = False


def _code(exc: BaseException) -> str:
    return status_for(exc)[0].name


class AuditedCall:
    """One call's audit state: its caller, the decisions made for it, its items."""

    def __init__(self, log: AuditLog | None, method: str, request_id: str) -> None:
        """Start the call's clock."""
        self.request_id = request_id
        self._log = log
        self._method = method
        self._started = time.perf_counter()
        self._caller: Caller | None = None
        self._notes: list[_Note] = []
        self._items = 0
        self._ended = False
        self.retry_after_ms = 0

    def attest(self, caller: Caller) -> Caller:
        """Remember who is calling."""
        self._caller = caller
        return caller

    def note(self, key: str, operation: str, decision: Decision) -> _Note:
        """The authorizer decided; remember it with the task it was made in."""
        note = _Note(asyncio.current_task(), key, operation, decision)
        self._notes.append(note)
        return note

    def _write(self, event: str, fields: Mapping[str, Any]) -> None:
        if self._log is None:
            return
        record: dict[str, Any] = {"event": event, "request_id": self.request_id, **fields}
        caller = self._caller
        if caller is not None:
            record["caller"], record["caller_kind"] = caller.name, caller.kind
            record.update(
                {f: caller.attributes[f] for f in _CALLER_FIELDS if f in caller.attributes}
            )
        record["duration_us"] = int((time.perf_counter() - self._started) * 1e6)
        self._log.write(record)

    def _op(self, notes: list[_Note], operation: str, key: str, version: int, code: str) -> None:
        for note in notes:
            note.written = True
        denied = any(not n.decision.allowed for n in notes)
        limits = [n.limit_id for n in notes if n.limit_id]
        self._write(
            "op",
            {
                **({"limit_id": limits[0]} if limits else {}),
                "operation": operation,
                "key": key or (notes[-1].key if notes else ""),
                "key_version": version,
                "decision": ("deny" if denied else "allow") if notes else "none",
                "rule_id": ",".join(dict.fromkeys(n.decision.rule_id for n in notes)),
                "code": code,
            },
        )

    def item(self, operation: str, key: str, key_version: int, error: BaseException | None) -> None:
        """One batch item finished in the current task."""
        task = asyncio.current_task()
        notes = [n for n in self._notes if n.task is task and not n.written]
        self._items += 1
        self._op(notes, operation, key, key_version, "OK" if error is None else _code(error))

    def _pending(self, code: str, response: object | None) -> None:
        for note in [n for n in self._notes if not n.written]:
            own = note.code or ("PERMISSION_DENIED" if not note.decision.allowed else code)
            self._op([note], note.operation, note.key, _version(response, note.key), own)

    def flush(self) -> None:
        """Record decisions so far as started operations (a stream is about to send data)."""
        if any(not n.written for n in self._notes):
            self._pending("OK", None)

    def end(self, code: str, response: object | None) -> None:
        """Record unclaimed decisions, then the call itself."""
        if self._ended:
            return
        self._ended = True
        self._pending(code, response)
        self._write("rpc", {"method": self._method, "code": code, "items": self._items})

    def fail(self, exc: BaseException) -> BaseException:
        """Record a failed call; an audit failure replaces the original error."""
        if isinstance(exc, AuditWriteError) or self._ended:
            return exc
        try:
            self.end(_code(exc), None)
        except AuditWriteError as audit_exc:
            return audit_exc
        return exc

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """Request id, and retry-after-ms when a rate limit refused any operation."""
        out: tuple[tuple[str, str], ...] = ((REQUEST_ID_METADATA_KEY, self.request_id),)
        if self.retry_after_ms:
            out += ((RETRY_AFTER_METADATA_KEY, str(self.retry_after_ms)),)
        return out


def _version(response: object | None, key: str) -> int:
    """The key version a single-key reply names (0 when it names none or another key)."""
    if getattr(response, "key", None) != key:
        return 0
    version = getattr(response, "key_version", 0)
    return version if isinstance(version, int) else 0


class CallAuditor:
    """The CallObserver of every servicer and the AuditSink of every service."""

    def __init__(self, log: AuditLog | None) -> None:
        """Write records to log (None: audit off, calls still observed for rate limits)."""
        self._log = log

    def begin(self, method: str, request_id: str) -> AuditedCall:
        """Observe a new call in the current task (each gRPC call has its own)."""
        call = AuditedCall(self._log, method, request_id)
        _CURRENT.set(call)
        return call

    def item(
        self, operation: str, *, key: str, key_version: int, error: BaseException | None
    ) -> None:
        """AuditSink: one batch item of the current call finished."""
        call = _CURRENT.get()
        if call is not None:
            call.item(operation, key, key_version, error)


class PolicyAuthorizer:
    """Authorizer over the policy in force: decide, note the decision, apply rate limits.

    Only an allowed operation takes rate-limit tokens: a denied one is PERMISSION_DENIED
    whatever its buckets hold, so denials neither drain a caller's budget nor hide behind
    RESOURCE_EXHAUSTED.
    """

    def __init__(
        self, policy: PolicyHolder, limiter: RateLimiter, counters: SecurityCounters
    ) -> None:
        """Decide with the holder's current policy."""
        self._policy = policy
        self._limiter = limiter
        self.counters = counters

    def authorize(
        self, caller: Caller, *, key: str, operation: str, context: Mapping[str, str]
    ) -> None:
        """Allow silently; raise PermissionDeniedError or RateLimitedError."""
        policy = self._policy.current
        decision = decide(policy, caller, key, operation, context)
        call = _CURRENT.get()
        note = call.note(key, operation, decision) if call is not None else None
        if not decision.allowed:
            self.counters.denied += 1
            raise PermissionDeniedError
        limited = self._limiter.take(policy, caller, key)
        if limited is not None:
            self.counters.rate_limited += 1
            if call is not None and note is not None:
                note.code, note.limit_id = "RESOURCE_EXHAUSTED", limited.limit_id
                call.retry_after_ms = max(call.retry_after_ms, limited.retry_after_ms)
            raise RateLimitedError(limited.retry_after_ms)
        self.counters.allowed += 1
