"""Loading policies: every mistake is one line naming the field."""

from __future__ import annotations

import pytest

from broker.policy import loader
from broker.policy.loader import PolicyError, load_policy_file, parse_policy

RULE = {"id": "r1", "callers": ["a"], "keys": ["k"], "operations": ["encrypt"]}


class TestErrors:
    """Invalid policies are rejected with the field and the fix."""

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"rules": [{**RULE, "id": ""}]}, "rules[0].id: every rule needs an id"),
            ({"rules": [RULE, RULE]}, "rules[1].id: duplicate rule id 'r1'"),
            ({"rules": [{**RULE, "operations": ["encrpt"]}]}, "unknown operation 'encrpt'"),
            ({"rules": [{**RULE, "keys": []}]}, "rules[0].keys: must not be empty"),
            ({"rules": [{**RULE, "effect": "maybe"}]}, "rules[0].effect: must be allow or deny"),
            ({"rules": [{**RULE, "colour": "red"}]}, "rules[0].colour: unknown setting"),
            ({"rules": [{**RULE, "context": {"t": "${tenant}"}}]}, "${caller.ATTRIBUTE}"),
            ({"identities": {"x": {}}}, "identities.x: needs at least one of"),
            ({"identities": {"x": {"uid": "no-such-user-kb"}}}, "no user named"),
            ({"identities": {"x": {"exe": "bin/x"}}}, "expected an absolute path"),
            (
                {"identities": {"x": {"uid": 1, "attributes": {"uid": "0"}}}},
                "is set by the transport",
            ),
            ({"limits": [{"id": "l", "callers": ["a"], "rate": 0}]}, "limits[0].rate: must be"),
            ({"version": 2}, "version: only version 1"),
            ({"rule": []}, "policy.rule: unknown setting"),
        ],
    )
    def test_rejected(self, data, message):
        """The message names the field."""
        with pytest.raises(PolicyError) as info:
            parse_policy(data, "p.toml")
        assert message in str(info.value)
        assert str(info.value).startswith("p.toml: ")

    def test_bad_toml_file(self, tmp_path):
        """A file that is not TOML names itself."""
        path = tmp_path / "p.toml"
        path.write_text("rules = [", encoding="utf-8")
        with pytest.raises(PolicyError, match="not valid TOML"):
            load_policy_file(path)

    def test_user_names_resolve(self):
        """User and group names resolve to numbers."""
        policy = parse_policy({"identities": {"r": {"uid": "root", "gid": "root"}}}, "p")
        assert dict(policy.identities[0].selectors) == {"uid": "0", "gid": "0"}


def _callers(*patterns: str, field: str = "rules") -> dict[str, object]:
    if field == "limits":
        return {"limits": [{"id": "l", "callers": list(patterns), "rate": 1}]}
    return {"rules": [{**RULE, "callers": list(patterns)}]}


class TestCallerNames:
    """Identity names and rules' caller patterns keep transport kinds apart."""

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (
                {"identities": {"uid:0": {"uid": 0}}},
                (
                    'identities.uid:0: names starting with "uid:" are the names transports give; '
                    "choose another name"
                ),
            ),
            ({"identities": {"cn:ops": {"cn": "ops"}}}, 'names starting with "cn:" are'),
            ({"identities": {"listener:a": {"listener": "a"}}}, 'names starting with "listener:"'),
            (
                {"identities": {"x": {"uid": 0, "cn": "ops"}}},
                (
                    "identities.x: uid and cn are attested by different listeners (peercred, tcp); "
                    "one identity takes the selectors of one listener kind"
                ),
            ),
            ({"identities": {"x": {"listener": "a", "gid": 0}}}, "(unix, peercred)"),
            (
                {"identities": {"x": {"exe": "/bin/x", "spiffe_id": "spiffe://a/b"}}},
                "(peercred, tcp)",
            ),
            (
                _callers("ops team"),
                (
                    'rules[0].callers: "ops team" is not an identity name; '
                    'write "dns:ops team" or "cn:ops team" for a client certificate'
                ),
            ),
            (
                _callers("uid:root"),
                (
                    'rules[0].callers: "uid:root": uid: takes a number, such as "uid:1001"; '
                    'or define an identity with uid = "root"'
                ),
            ),
            (_callers("cn:"), 'rules[0].callers: "cn:" needs a value after "cn:"'),
            (
                _callers("spiffe:spiffe://example.org/app"),
                (
                    'rules[0].callers: "spiffe:spiffe://example.org/app": write the SPIFFE ID '
                    'as it is, "spiffe://example.org/app"'
                ),
            ),
            (
                _callers("spiffe:example.org/app"),
                'write the SPIFFE ID as it is, "spiffe://TRUST-DOMAIN/PATH"',
            ),
            (_callers("ops@x", field="limits"), 'limits[0].callers: "ops@x" is not an identity'),
        ],
    )
    def test_rejected(self, data, message):
        """One line naming the field, the pattern and how to write it."""
        with pytest.raises(PolicyError) as info:
            parse_policy(data, "p.toml")
        assert str(info.value).startswith("p.toml: ")
        assert message in str(info.value)
        assert "\n" not in str(info.value)

    @pytest.mark.parametrize(
        "pattern",
        [
            "*",
            "billing",
            "billing-*",
            "team:ops",
            "listener:ops",
            "listener:app-*",
            "uid:0",
            "uid:10[0-9][0-9]",
            "uid:*",
            "spiffe://example.org/payments/*",
            "spiffe://*",
            "dns:*.internal",
            "cn:ops team",
        ],
    )
    def test_accepted(self, pattern):
        """Typed patterns, identity names and globs within one kind load as written."""
        assert parse_policy(_callers(pattern), "p").rules[0].callers == (pattern,)


IDENTITIES = {"billing": {"uid": 1001}, "app-a": {"listener": "app-a"}, "ops": {"uid": 0}}


class TestListenerNames:
    """At start, bare caller names are checked against the daemon's unix listeners."""

    @pytest.mark.parametrize(
        ("patterns", "listeners"),
        [
            (["billing"], []),
            (["app-a"], ["app-a"]),
            (["app-b"], ["app-a", "app-b"]),
            (["app-*"], ["app-b"]),
            (["*"], []),
            (["listener:gone", "uid:0", "cn:x", "dns:y"], []),
            (["ops"], []),
        ],
    )
    def test_accepted(self, patterns, listeners):
        """Identity names, listeners' identities, `*` and typed names pass."""
        policy = parse_policy({"identities": IDENTITIES, **_callers(*patterns)}, "p")
        loader.check_callers(policy, listeners)

    @pytest.mark.parametrize(
        ("data", "listeners", "message"),
        [
            (
                _callers("billing.internal"),
                ["ops"],
                (
                    'p: rules[0].callers: "billing.internal" names no identity and no unix '
                    'listener; write "listener:billing.internal" for a unix listener, '
                    '"dns:billing.internal" or "cn:billing.internal" for a client certificate'
                ),
            ),
            (_callers("app-*"), ["ops"], 'rules[0].callers: "app-*" names no identity'),
            (_callers("ops", field="limits"), [], 'limits[0].callers: "ops" names no identity'),
            (
                {"identities": {"ops": {"uid": 0}}, **_callers("ops")},
                ["ops"],
                (
                    'p: rules[0].callers: "ops" names [identities.ops], which the callers of the '
                    'unix listener "ops" are not; write "listener:ops" for them, or rename the '
                    "identity"
                ),
            ),
            (
                {"identities": {"ops": {"uid": 0}}, **_callers("op*")},
                ["ops"],
                'rules[0].callers: "op*" names [identities.ops], which the callers',
            ),
        ],
    )
    def test_refused(self, data, listeners, message):
        """A bare name no caller of this daemon can have, or two kinds of it, stops the start."""
        policy = parse_policy(data, "p")
        with pytest.raises(PolicyError) as info:
            loader.check_callers(policy, listeners)
        assert message in str(info.value)
        assert "\n" not in str(info.value)

    def test_listener_resolving_to_its_identity(self):
        """An identity defined by the listener itself is no clash."""
        data = {"identities": {"ops": {"listener": "ops"}}, **_callers("ops")}
        loader.check_callers(parse_policy(data, "p"), ["ops"])
