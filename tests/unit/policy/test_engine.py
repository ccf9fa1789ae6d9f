"""Policy decisions as tables: identity x key x operation x context -> decision and rule id."""

from __future__ import annotations

import pytest

from broker.policy.authorizer import Caller
from broker.policy.engine import decide, identify
from broker.policy.loader import parse_policy

POLICY = parse_policy(
    {
        "identities": {
            "billing-a": {"listener": "billing-a", "attributes": {"tenant": "a"}},
            "billing-b": {"listener": "billing-b", "attributes": {"tenant": "b"}},
            "reports": {"uid": 1500},
            "staff": {"gid": 2000},
            "payments": {"spiffe_id": "spiffe://example.org/payments/*"},
            "tool": {"exe": "/usr/bin/tool", "uid": 1600},
        },
        "rules": [
            {
                "id": "billing-own-tenant",
                "callers": ["billing-*"],
                "keys": ["pii"],
                "operations": ["encrypt", "decrypt", "rewrap"],
                "context": {"tenant": "${caller.tenant}"},
            },
            {
                "id": "reports-read",
                "callers": ["reports"],
                "keys": ["reports", "archive-*"],
                "operations": ["decrypt"],
            },
            {
                "id": "no-archive-2019",
                "callers": ["*"],
                "keys": ["archive-2019"],
                "operations": ["*"],
                "effect": "deny",
            },
            {
                "id": "payments-eu",
                "callers": ["payments"],
                "keys": ["card"],
                "operations": ["encrypt", "sign"],
                "context": {"region": ["eu-west", "eu-central"], "order": "*"},
            },
            {"id": "staff-admin", "callers": ["staff"], "keys": ["*"], "operations": ["admin"]},
            {"id": "tool-token", "callers": ["tool"], "keys": ["*"], "operations": ["token"]},
        ],
    },
    "test",
)


def _listener(name: str) -> Caller:
    return identify(POLICY, Caller("listener", name, {"listener": name}))


def _peer(uid: int, gid: int = 100, groups: str = "", exe: str = "/bin/x") -> Caller:
    attrs = {"uid": str(uid), "gid": str(gid), "groups": groups, "exe": exe, "pid": "1"}
    return identify(POLICY, Caller("peercred", f"uid:{uid}", attrs))


def _spiffe(spiffe_id: str) -> Caller:
    return identify(POLICY, Caller("spiffe", spiffe_id, {"spiffe_id": spiffe_id}))


class TestDecisions:
    """Each row: who, key, operation, context -> allowed?, the rule that decided."""

    @pytest.mark.parametrize(
        ("caller", "key", "op", "context", "allowed", "rule"),
        [
            (_listener("billing-a"), "pii", "encrypt", {"tenant": "a"}, True, "billing-own-tenant"),
            (_listener("billing-a"), "pii", "decrypt", {"tenant": "a"}, True, "billing-own-tenant"),
            (_listener("billing-a"), "pii", "decrypt", {"tenant": "b"}, False, "default-deny"),
            (_listener("billing-b"), "pii", "decrypt", {"tenant": "a"}, False, "default-deny"),
            (_listener("billing-a"), "pii", "encrypt", {}, False, "default-deny"),
            (_listener("billing-a"), "pii", "lease", {"tenant": "a"}, False, "default-deny"),
            (_listener("billing-a"), "other", "encrypt", {"tenant": "a"}, False, "default-deny"),
            (_listener("unknown"), "pii", "encrypt", {"tenant": "a"}, False, "default-deny"),
            (_peer(1500), "reports", "decrypt", {}, True, "reports-read"),
            (_peer(1500), "archive-2020", "decrypt", {}, True, "reports-read"),
            (_peer(1500), "archive-2019", "decrypt", {}, False, "no-archive-2019"),
            (_peer(1500), "reports", "encrypt", {}, False, "default-deny"),
            (_peer(1501), "reports", "decrypt", {}, False, "default-deny"),
            (_peer(1700, gid=2000), "anything", "admin", {}, True, "staff-admin"),
            (_peer(1700, groups="10,2000"), "anything", "admin", {}, True, "staff-admin"),
            (_peer(1700, groups="10,20"), "anything", "admin", {}, False, "default-deny"),
            (_peer(1600, exe="/usr/bin/tool"), "t", "token", {}, True, "tool-token"),
            (_peer(1600, exe="/home/u/tool"), "t", "token", {}, False, "default-deny"),
            (
                _spiffe("spiffe://example.org/payments/api"),
                "card",
                "sign",
                {"region": "eu-west", "order": "7"},
                True,
                "payments-eu",
            ),
            (
                _spiffe("spiffe://example.org/payments/api"),
                "card",
                "sign",
                {"region": "us-east", "order": "7"},
                False,
                "default-deny",
            ),
            (
                _spiffe("spiffe://example.org/payments/api"),
                "card",
                "encrypt",
                {"region": "eu-central"},
                False,
                "default-deny",
            ),
            (
                _spiffe("spiffe://evil.org/payments/api"),
                "card",
                "encrypt",
                {},
                False,
                "default-deny",
            ),
        ],
    )
    def test_table(self, caller, key, op, context, allowed, rule):  # noqa: PLR0913, PLR0917
        """The decision and the rule id match the row."""
        decision = decide(POLICY, caller, key, op, context)
        assert (decision.allowed, decision.rule_id) == (allowed, rule)


class TestTenantIsolation:
    """Tenant A cannot use tenant B's context, even on the same key."""

    def test_same_key_other_tenant(self):
        """billing-a may use `pii` only with tenant=a; tenant=b is denied on every op."""
        caller = _listener("billing-a")
        for op in ("encrypt", "decrypt", "rewrap"):
            assert decide(POLICY, caller, "pii", op, {"tenant": "a"}).allowed
            assert not decide(POLICY, caller, "pii", op, {"tenant": "b"}).allowed

    def test_missing_attribute_denies(self):
        """A caller without a tenant attribute matches no ${caller.tenant} constraint."""
        caller = Caller("listener", "billing-x", {})
        assert not decide(POLICY, caller, "pii", "encrypt", {"tenant": ""}).allowed


class TestIdentify:
    """Transport callers map to named identities; attributes merge, transport wins."""

    def test_first_match_and_attributes(self):
        """A listener identity gets the policy's attributes."""
        caller = _listener("billing-a")
        assert (caller.name, caller.attributes["tenant"]) == ("billing-a", "a")

    def test_unmatched_keeps_transport_name(self):
        """An unknown uid keeps the name uid:N and gets no attributes."""
        caller = _peer(4242)
        assert caller.name == "uid:4242"
        assert "tenant" not in caller.attributes

    def test_all_selectors_must_match(self):
        """Both uid and exe must match: the right uid with another executable is not `tool`."""
        assert _peer(1600, exe="/usr/bin/other").name == "uid:1600"
