"""The policy source: a valid edit takes effect, an invalid one leaves the policy in force."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from broker.policy.builtin import SOCKET_ACCESS_POLICY
from broker.policy.engine import PolicyHolder
from broker.policy.loader import load_policy_file
from broker.policy.source import PolicySource

RULE = """\
[[{table}rules]]
id = "{rule}"
callers = ["*"]
keys = ["pii"]
operations = ["encrypt"]
"""


def _policy(rule, table=None):
    return RULE.format(rule=rule, table=f"{table}." if table else "")


def _source(tmp_path, table=None):
    path = tmp_path / "policy.toml"
    path.write_text(_policy("first", table), encoding="utf-8")
    return path, PolicySource(PolicyHolder(load_policy_file(path, table)), path, table)


def _rule_ids(source):
    return [rule.id for rule in source.holder.current.rules]


class TestReload:
    """reload() puts a valid file in force and refuses an invalid one."""

    def test_valid_edit_replaces_the_policy(self, tmp_path):
        """The edited rules are in force and the reload is counted."""
        path, source = _source(tmp_path)
        path.write_text(_policy("second"), encoding="utf-8")
        with capture_logs() as logs:
            assert source.reload("sighup") is True
        assert _rule_ids(source) == ["second"]
        assert source.reloads == {"ok": 1}
        assert [(e["event"], e["reason"]) for e in logs] == [("policy_reloaded", "sighup")]

    def test_invalid_edit_keeps_the_policy(self, tmp_path):
        """Broken TOML is refused: the previous rules stay, the failure is counted and logged."""
        path, source = _source(tmp_path)
        path.write_text("rules = [ this is not toml", encoding="utf-8")
        with capture_logs() as logs:
            assert source.reload("sighup") is False
        assert _rule_ids(source) == ["first"]
        assert source.reloads == {"failed": 1}
        assert logs[0]["event"] == "policy_reload_failed"
        assert logs[0]["kept"] == "previous"
        assert "not valid TOML" in logs[0]["error"]

    def test_removed_file_keeps_the_policy(self, tmp_path):
        """A file that disappeared is a failed reload, not an empty policy."""
        path, source = _source(tmp_path)
        path.unlink()
        assert source.reload("file_changed") is False
        assert _rule_ids(source) == ["first"]

    def test_table_of_a_config_file(self, tmp_path):
        """A policy kept as a table of the configuration file reloads from that table."""
        path, source = _source(tmp_path, "policy")
        assert _rule_ids(source) == ["first"]
        path.write_text(_policy("second", "policy"), encoding="utf-8")
        assert source.reload("sighup") is True
        assert _rule_ids(source) == ["second"]

    def test_built_in_policy_never_reloads(self):
        """Without a file there is nothing to reload and nothing is counted."""
        source = PolicySource(PolicyHolder(SOCKET_ACCESS_POLICY), None)
        assert source.reload("sighup") is False
        assert source.holder.current is SOCKET_ACCESS_POLICY
        assert not source.reloads


class TestWatch:
    """watch() reloads when the file's stat() changes, and only then."""

    async def test_change_is_picked_up(self, tmp_path):
        """An edited file is in force within a few polls; an unchanged one is not reloaded."""
        path, source = _source(tmp_path)
        watcher = asyncio.create_task(source.watch(interval=0.01))
        try:
            await asyncio.sleep(0.05)
            assert not source.reloads
            path.write_text(_policy("a-longer-name"), encoding="utf-8")
            for _ in range(100):
                if source.reloads:
                    break
                await asyncio.sleep(0.01)
        finally:
            watcher.cancel()
        assert source.reloads == {"ok": 1}
        assert _rule_ids(source) == ["a-longer-name"]
