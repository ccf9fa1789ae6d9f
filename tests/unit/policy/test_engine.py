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
    return identify(POLICY, Caller("listener", f"listener:{name}", {"listener": name}))


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


# Raw callers as each transport names them when no policy identity matches.
UNIX_OPS = Caller("listener", "listener:ops", {"listener": "ops"})
ROOT = Caller("peercred", "uid:0", {"uid": "0", "gid": "0", "groups": "0", "exe": "/bin/sh"})
CN_OPS = Caller("cn", "cn:ops", {"cn": "ops"})
CN_ROOT = Caller("cn", "cn:uid:0", {"cn": "uid:0"})
CN_LISTENER = Caller("cn", "cn:listener:ops", {"cn": "listener:ops"})
DNS_OPS = Caller("dns", "dns:ops", {"dns": "ops", "cn": "ops"})
PAYMENTS_ID = "spiffe://example.org/payments/api"
SPIFFE_PAY = Caller("spiffe", PAYMENTS_ID, {"spiffe_id": PAYMENTS_ID})
CN_PAY = Caller("cn", f"cn:{PAYMENTS_ID}", {"cn": PAYMENTS_ID})


def _allowed(pattern: str, raw: Caller, identities: dict[str, object] | None = None) -> bool:
    """Whether a one-rule policy naming `pattern` lets raw (mapped through it) encrypt."""
    rule = {"id": "r", "callers": [pattern], "keys": ["k"], "operations": ["encrypt"]}
    policy = parse_policy({"identities": identities or {}, "rules": [rule]}, "t")
    return decide(policy, identify(policy, raw), "k", "encrypt", {}).allowed


class TestCallerKinds:
    """A rule names one kind of caller: no certificate reaches a listener's or uid's rules."""

    @pytest.mark.parametrize(
        ("pattern", "raw", "allowed"),
        [
            ("ops", UNIX_OPS, True),
            ("listener:ops", UNIX_OPS, True),
            ("listener:op*", UNIX_OPS, True),
            ("ops", CN_OPS, False),
            ("ops", DNS_OPS, False),
            ("*ops", CN_OPS, False),
            ("o?s", DNS_OPS, False),
            ("listener:ops", CN_OPS, False),
            ("listener:ops", CN_LISTENER, False),
            ("listener:*", CN_LISTENER, False),
            ("uid:0", ROOT, True),
            ("uid:*", ROOT, True),
            ("uid:0", CN_ROOT, False),
            ("uid:*", CN_ROOT, False),
            ("cn:ops", CN_OPS, True),
            ("cn:ops", UNIX_OPS, False),
            ("cn:ops", DNS_OPS, False),
            ("dns:ops", DNS_OPS, True),
            ("dns:*", CN_OPS, False),
            ("cn:*", ROOT, False),
            ("spiffe://example.org/payments/*", SPIFFE_PAY, True),
            ("spiffe://example.org/payments/*", CN_PAY, False),
            ("spiffe://*", CN_PAY, False),
            ("spiffe://*", UNIX_OPS, False),
            ("*api", SPIFFE_PAY, False),
            ("*", UNIX_OPS, True),
            ("*", ROOT, True),
            ("*", CN_OPS, True),
        ],
    )
    def test_pattern_reaches_only_its_kind(self, pattern, raw, allowed):
        """Each row: the rule's caller pattern, the transport's caller, allowed?"""
        assert _allowed(pattern, raw) is allowed

    @pytest.mark.parametrize(
        ("identities", "pattern", "raw", "allowed"),
        [
            ({"ops": {"uid": 0}}, "ops", ROOT, True),
            ({"ops": {"uid": 0}}, "ops", UNIX_OPS, False),
            ({"ops": {"uid": 0}}, "listener:ops", UNIX_OPS, True),
            ({"ops": {"listener": "ops"}}, "ops", UNIX_OPS, True),
            ({"ops": {"cn": "ops"}}, "ops", CN_OPS, True),
            ({"ops": {"cn": "ops"}}, "ops", UNIX_OPS, False),
            ({"ops": {"listener": "ops"}}, "ops", CN_OPS, False),
            ({"root": {"uid": 0}}, "root", CN_ROOT, False),
        ],
    )
    def test_bare_name_is_the_policy_identity_first(self, identities, pattern, raw, allowed):
        """A bare name is the policy's identity; a listener's only when no identity has it."""
        assert _allowed(pattern, raw, identities) is allowed


class TestIdentifyByTransport:
    """An identity matches callers of the listener kind its selectors come from, only."""

    @pytest.mark.parametrize(
        ("selectors", "raw", "name"),
        [
            ({"cn": "*"}, CN_OPS, "x"),
            ({"cn": "*"}, UNIX_OPS, "listener:ops"),
            ({"cn": "*"}, ROOT, "uid:0"),
            ({"dns": "*"}, CN_OPS, "cn:ops"),
            ({"dns": "*"}, DNS_OPS, "x"),
            ({"spiffe_id": "*"}, ROOT, "uid:0"),
            ({"spiffe_id": "*"}, CN_PAY, f"cn:{PAYMENTS_ID}"),
            ({"spiffe_id": "spiffe://example.org/*"}, SPIFFE_PAY, "x"),
            ({"listener": "ops"}, CN_LISTENER, "cn:listener:ops"),
            ({"listener": "ops"}, UNIX_OPS, "x"),
            ({"uid": 0}, CN_ROOT, "cn:uid:0"),
            ({"uid": 0}, ROOT, "x"),
        ],
    )
    def test_selectors_of_one_transport(self, selectors, raw, name):
        """Each row: identity x's selectors, the transport's caller, the name it gets."""
        policy = parse_policy({"identities": {"x": selectors}}, "t")
        assert identify(policy, raw).name == name

    def test_kind_is_kept(self):
        """A named identity keeps the transport's kind, so audit records say how it was attested."""
        policy = parse_policy({"identities": {"pay": {"spiffe_id": PAYMENTS_ID}}}, "t")
        caller = identify(policy, SPIFFE_PAY)
        assert (caller.kind, caller.name) == ("spiffe", "pay")
