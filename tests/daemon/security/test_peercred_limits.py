"""The peercred listener under connection floods: caps per uid and in total, and fd headroom.

A real daemon, real OS users, idle connections that never send a byte. Refused connections are
closed at accept; callers already connected keep being served and stay authenticated.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import grpc
import pytest
from daemon.security.hold_connections import refused
from support.os_users import run_as

from broker.config.listeners import parse_listeners
from broker.errors import ConfigError
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

HOLD = Path(__file__).with_name("hold_connections.py")
METRIC = "keybroker_peercred_connections_refused_total"
CONFIG = """
[server]
state_dir = "{state}"
allow_root = true

[[listeners]]
kind = "unix"
path = "{run}/ops.sock"
mode = "0600"
identity = "ops"

[[listeners]]
kind = "peercred"
path = "{run}/peer.sock"
mode = "0666"
{limits}

[keys.default]
uri = "local://default"

[[policy.rules]]
id = "everyone"
callers = ["uid:*"]
keys = ["default"]
operations = ["encrypt"]
"""
FD_LIMIT = 256


def _peer(d) -> Path:
    return d.socket.with_name("peer.sock")


def _encrypt(channel: grpc.Channel) -> bytes:
    stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
    return bytes(
        stub.Encrypt(pb.EncryptRequest(key="default", plaintext=b"x"), timeout=10).ciphertext
    )


def _open(path: Path, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        socks.append(sock)
    return socks


class TestFdHeadroom:
    """Near RLIMIT_NOFILE new connections are shed; existing callers keep working."""

    @pytest.fixture
    def daemon(self, configured):
        """Generous caps, so the fd limit (set on the running daemon) is what binds."""
        limits = "max_connections = 4000\nmax_connections_per_uid = 4000"
        d = configured(CONFIG, limits=limits).start()
        subprocess.run(["prlimit", f"--pid={d.pid}", f"--nofile={FD_LIMIT}:{FD_LIMIT}"], check=True)
        return d

    def test_flood_sheds_new_connections_only(self, daemon):
        """An idle flood hits the headroom; the channel opened before it still answers."""
        with grpc.insecure_channel(f"unix:{_peer(daemon)}") as before:
            _encrypt(before)
            held: list[socket.socket] = []
            try:
                for _ in range(FD_LIMIT // 4):  # at most 2 * FD_LIMIT connections
                    batch = _open(_peer(daemon), 8)
                    held += batch
                    if refused(batch, wait=0.5):
                        break
                assert refused(_open(_peer(daemon), 4)) == 4
                assert _encrypt(before)
                assert _encrypt(before)
            finally:
                for sock in held:
                    sock.close()
        assert daemon.metric(METRIC, reason="fd_limit") >= 4
        assert daemon.log().count("peercred_connections_refused") < 5


class TestPerUidCap:
    """One uid cannot take every connection slot of the listener."""

    CAP = 5

    def test_cap_binds_one_uid_only(self, configured, os_users):
        """User a is refused past its cap while user b connects and calls; a recovers after."""
        limits = f"max_connections_per_uid = {self.CAP}"
        d = configured(CONFIG, limits=limits).start()
        a = os_users.a
        groups = ",".join(map(str, a.groups))
        argv = [sys.executable, str(HOLD), str(a.uid), str(a.gid), groups, str(_peer(d)), "12"]
        with subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as holder:
            assert holder.stdout is not None
            assert holder.stdin is not None
            held = json.loads(holder.stdout.readline())
            assert held == {"open": self.CAP, "refused": 12 - self.CAP}
            assert run_as(os_users.b, "encrypt", _peer(d), "default")["code"] == "OK"
            assert run_as(a, "encrypt", _peer(d), "default")["code"] == "UNAVAILABLE"
            holder.stdin.close()
            holder.wait(10)
        assert run_as(a, "encrypt", _peer(d), "default")["code"] == "OK"
        assert d.metric(METRIC, reason="max_connections_per_uid") >= 12 - self.CAP + 1

    def test_total_cap(self, configured):
        """Past max_connections every new connection is refused, whoever opens it."""
        d = configured(CONFIG, limits="max_connections = 3").start()
        socks = _open(_peer(d), 6)
        try:
            assert refused(socks) == 3
        finally:
            for sock in socks:
                sock.close()
        assert d.metric(METRIC, reason="max_connections") == 3


class TestLimitSettings:
    """The two caps parse with safe defaults and are checked like every listener setting."""

    PEER: ClassVar[dict[str, object]] = {"kind": "peercred", "path": "/run/kb/p.sock"}

    def test_defaults(self):
        """Without settings a peercred listener has both caps, the per-uid one the smaller."""
        (listener,) = parse_listeners([self.PEER], "f")
        assert 0 < listener.max_connections_per_uid < listener.max_connections

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            ({"max_connections": 0}, r"listeners\[0\].max_connections: expected an integer"),
            ({"max_connections": "9"}, r"listeners\[0\].max_connections: expected an integer"),
            ({"max_connections_per_uid": -1}, r"max_connections_per_uid: expected an integer"),
            (
                {"max_connections": 10, "max_connections_per_uid": 11},
                r"max_connections_per_uid: at most max_connections \(10\)",
            ),
        ],
    )
    def test_rejected(self, extra, message):
        """Non-positive, non-integer and inconsistent caps are refused, naming the field."""
        with pytest.raises(ConfigError, match=message):
            parse_listeners([{**self.PEER, **extra}], "f")

    def test_only_for_peercred(self):
        """A unix listener has no such setting."""
        unix = {"kind": "unix", "path": "/run/kb/a.sock", "identity": "a", "max_connections": 5}
        with pytest.raises(ConfigError, match="not a setting of unix listeners"):
            parse_listeners([unix], "f")
