"""Parsing [[listeners]] and [policy], and refusing readable config files that hold secrets."""

from __future__ import annotations

import pytest

from broker.config.listeners import check_secret_file, parse_listeners
from broker.config.load import load_config
from broker.errors import ConfigError

UNIX = {"kind": "unix", "path": "/run/kb/a.sock", "identity": "app-a"}


class TestListeners:
    """One line naming the listener and the field."""

    def test_kinds(self):
        """unix, peercred and tcp parse with their defaults."""
        tcp = {
            "kind": "tcp",
            "address": "127.0.0.1:8443",
            "tls": {"cert": "/c.pem", "key": "/k.pem", "client_ca": "/ca.pem"},
        }
        peer = {"kind": "peercred", "path": "/run/kb/p.sock", "mode": "0666", "group": 0}
        unix, peercred, tls = parse_listeners([UNIX, peer, tcp], "f")
        assert (unix.mode, unix.owner, unix.group, unix.identity) == (0o660, None, None, "app-a")
        assert (peercred.mode, peercred.group) == (0o666, 0)
        assert tls.tls is not None
        assert str(tls.tls.client_ca) == "/ca.pem"

    @pytest.mark.parametrize(
        ("listeners", "message"),
        [
            ([{"kind": "udp"}], "listeners[0].kind: must be one of unix, peercred, tcp"),
            ([{**UNIX, "identity": ""}], "listeners[0].identity: a unix listener needs"),
            ([{**UNIX, "mode": "rw"}], "listeners[0].mode: expected an octal string"),
            ([{**UNIX, "owner": "no-such-user-kb"}], "listeners[0].owner: no user named"),
            ([UNIX, UNIX], "listeners[1]: /run/kb/a.sock is used by another listener"),
            ([{"kind": "peercred", "path": "/" + "p" * 70}], "too long for a peercred listener"),
            ([{"kind": "peercred", "path": "/p", "identity": "x"}], "not a setting of peercred"),
            ([{"kind": "tcp", "address": "8443"}], "listeners[0].address: expected HOST:PORT"),
            ([{"kind": "tcp", "address": "h:1", "tls": {}}], "listeners[0].tls.cert: expected"),
            ([], "listeners: expected one or more"),
        ],
    )
    def test_rejected(self, listeners, message):
        """The message names the entry and field."""
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_listeners(listeners, "f")


class TestSecretFiles:
    """Secrets only in files nobody else can read."""

    def test_readable_file_with_token(self, tmp_path):
        """A 0644 file with backends.vault.token is refused, naming the setting, not the value."""
        path = tmp_path / "kb.toml"
        path.write_text("x")
        path.chmod(0o644)
        with pytest.raises(ConfigError) as info:
            check_secret_file(path, {"backends": {"vault": {"token": "s.XYZ"}}})
        assert "backends.vault.token" in str(info.value)
        assert "s.XYZ" not in str(info.value)

    def test_private_file_or_no_secret(self, tmp_path):
        """0600 files may hold secrets; token_label is not a secret."""
        path = tmp_path / "kb.toml"
        path.write_text("x")
        path.chmod(0o600)
        check_secret_file(path, {"backends": {"vault": {"token": "s.XYZ"}}})
        path.chmod(0o644)
        check_secret_file(path, {"backends": {"pkcs11": {"token_label": "kb"}}})


class TestPolicySection:
    """[policy] inline or by file, validated at load."""

    def test_inline_policy_error_names_file(self, tmp_path):
        """A broken inline rule stops `config check` with the config file's name."""
        path = tmp_path / "kb.toml"
        path.write_text(
            '[keys.default]\nuri = "local://default"\n'
            '[[policy.rules]]\nid = "r"\ncallers = ["a"]\nkeys = ["k"]\noperations = ["nope"]\n'
        )
        with pytest.raises(ConfigError, match="unknown operation 'nope'"):
            load_config(path, env={})

    def test_policy_file_relative_to_config(self, tmp_path):
        """`file` is resolved next to the configuration."""
        (tmp_path / "policy.toml").write_text("[identities.a]\nuid = 0\n")
        path = tmp_path / "kb.toml"
        path.write_text('[keys.default]\nuri = "local://default"\n[policy]\nfile = "policy.toml"\n')
        cfg = load_config(path, env={})
        assert cfg.policy is not None
        assert cfg.policy.file == tmp_path / "policy.toml"
