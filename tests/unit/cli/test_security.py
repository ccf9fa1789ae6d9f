"""`keybroker policy check|explain` print the decision and the rule id."""

from __future__ import annotations

import pytest

from broker.cli.entry import main

POLICY = """
[identities.billing]
uid = 1001
attributes = { tenant = "acme" }

[[rules]]
id = "billing-own-tenant"
callers = ["billing"]
keys = ["pii"]
operations = ["encrypt", "decrypt"]
context = { tenant = "${caller.tenant}" }
"""


@pytest.fixture
def policy(tmp_path):
    """A policy file with one tenant-bound rule."""
    path = tmp_path / "policy.toml"
    path.write_text(POLICY, encoding="utf-8")
    return path


class TestPolicyCommands:
    """Offline policy tools."""

    def test_check(self, policy, capsys):
        """A valid policy is summarised; exit 0."""
        assert main(["policy", "check", str(policy)]) == 0
        assert "ok (1 identities, 1 rules, 0 limits)" in capsys.readouterr().out

    def test_check_invalid(self, tmp_path, capsys):
        """An invalid policy exits 2 with the field."""
        bad = tmp_path / "bad.toml"
        bad.write_text('[[rules]]\nid = "x"\n')
        assert main(["policy", "check", str(bad)]) == 2
        assert "rules[0].callers" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("context", "code", "line"),
        [
            ("tenant=acme", 0, "allow (rule billing-own-tenant)"),
            ("tenant=other", 1, "deny (rule default-deny)"),
        ],
    )
    def test_explain(self, policy, capsys, context, code, line):
        """The caller's policy attributes are used; the rule id is printed."""
        argv = ["policy", "explain", "--policy", str(policy), "--caller", "billing"]
        argv += ["--key", "pii", "--op", "decrypt", "--context", context]
        assert main(argv) == code
        assert capsys.readouterr().out.startswith(line)
