"""PolicyAuthorizer: the decision comes first, and only allowed operations take tokens."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import PermissionDeniedError
from broker.policy.authorizer import Caller
from broker.policy.engine import PolicyHolder
from broker.policy.loader import parse_policy
from broker.policy.ratelimit import RateLimiter
from broker.rpc.audit_calls import (
    CallAuditor,
    PolicyAuthorizer,
    RateLimitedError,
    SecurityCounters,
)

POLICY = parse_policy(
    {
        "rules": [
            {"id": "app-pii", "callers": ["app"], "keys": ["pii"], "operations": ["encrypt"]}
        ],
        "limits": [{"id": "app-rate", "callers": ["app"], "rate": 1.0, "burst": 2}],
    },
    "test",
)
APP = Caller("listener", "app")


class Clock:
    """A monotonic clock that stands still unless the test moves it."""

    now = 100.0

    def __call__(self) -> float:
        """The current moment."""
        return self.now


class RecordingLog:
    """Keeps the audit records a call writes."""

    def __init__(self) -> None:
        """No records yet."""
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        """Keep one record."""
        self.records.append(record)


@pytest.fixture
def authz() -> PolicyAuthorizer:
    """The authorizer over POLICY, its buckets on a clock that does not move."""
    return PolicyAuthorizer(PolicyHolder(POLICY), RateLimiter(Clock()), SecurityCounters())


def _allowed(authz: PolicyAuthorizer) -> None:
    authz.authorize(APP, key="pii", operation="encrypt", context={})


def _limited(authz: PolicyAuthorizer) -> None:
    with pytest.raises(RateLimitedError):
        _allowed(authz)


def _denied(authz: PolicyAuthorizer) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        authz.authorize(APP, key="payroll", operation="encrypt", context={})
    assert not isinstance(caught.value, RateLimitedError)


class TestPolicyAuthorizer:
    """Denials answer PERMISSION_DENIED and leave the caller's buckets alone."""

    def test_denied_operations_take_no_tokens(self, authz):
        """Five denials leave the whole burst of two to allowed operations."""
        for _ in range(5):
            _denied(authz)
        _allowed(authz)
        _allowed(authz)
        _limited(authz)
        assert authz.counters == SecurityCounters(allowed=2, denied=5, rate_limited=1)

    def test_denied_with_an_empty_bucket(self, authz):
        """With the bucket drained, a denied operation is still PERMISSION_DENIED."""
        _allowed(authz)
        _allowed(authz)
        _denied(authz)
        _limited(authz)
        assert authz.counters == SecurityCounters(allowed=2, denied=1, rate_limited=1)

    async def test_audit_records(self, authz):
        """A denial is recorded as deny without a limit; a limited operation names its limit."""
        log = RecordingLog()
        auditor = CallAuditor(log)  # type: ignore[arg-type]
        attempts = [
            (_allowed, "OK"),
            (_allowed, "OK"),
            (_denied, "PERMISSION_DENIED"),
            (_limited, "RESOURCE_EXHAUSTED"),
        ]
        for number, (attempt, code) in enumerate(attempts):
            call = auditor.begin("Encrypt", f"request-{number}")
            call.attest(APP)
            attempt(authz)
            call.end(code, None)
        ops = [r for r in log.records if r["event"] == "op"]
        assert [(r["decision"], r["rule_id"], r["code"], r.get("limit_id")) for r in ops] == [
            ("allow", "app-pii", "OK", None),
            ("allow", "app-pii", "OK", None),
            ("deny", "default-deny", "PERMISSION_DENIED", None),
            ("allow", "app-pii", "RESOURCE_EXHAUSTED", "app-rate"),
        ]
