"""Loading policies: every mistake is one line naming the field."""

from __future__ import annotations

import pytest

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
