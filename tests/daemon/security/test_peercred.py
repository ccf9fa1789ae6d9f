"""The peercred listener with two real OS users: kernel-attested uid/gid decide access."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from support.os_users import run_as

from broker.errors import UnauthenticatedError
from broker.policy.engine import PolicyHolder
from broker.policy.loader import parse_policy
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc
from broker.transport.peercred import (
    Attestation,
    Attestations,
    PeercredIdentity,
    attest,
    process_start_time,
)

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

[keys.default]
uri = "local://default"

[keys.pii]
uri = "local://pii"

[policy.identities.alice]
uid = {uid_a}
attributes = {{ tenant = "a" }}

[policy.identities.staff]
gid = {gid}

[[policy.rules]]
id = "alice-default"
callers = ["alice"]
keys = ["default"]
operations = ["encrypt", "decrypt"]

[[policy.rules]]
id = "staff-pii"
callers = ["staff"]
keys = ["pii"]
operations = ["encrypt"]

[[policy.rules]]
id = "root-all"
callers = ["uid:0", "ops"]
keys = ["*"]
operations = ["*"]
"""


@pytest.fixture
def peer_daemon(configured, os_users):
    """A daemon with a peercred listener; alice = user a, staff = members of the group."""
    return configured(CONFIG, uid_a=os_users.a.uid, gid=os_users.gid).start()


def _peer_socket(d) -> Path:
    return d.socket.with_name("peer.sock")


class TestUidAndGid:
    """Two real users through the same public socket get different decisions."""

    def test_uid_allow_and_deny(self, peer_daemon, os_users):
        """User a (alice) may encrypt with `default`; user b may not."""
        sock = _peer_socket(peer_daemon)
        assert run_as(os_users.a, "encrypt", sock, "default")["code"] == "OK"
        denied = run_as(os_users.b, "encrypt", sock, "default")
        assert (denied["code"], denied["details"]) == ("PERMISSION_DENIED", "permission denied")

    def test_supplementary_group(self, peer_daemon, os_users):
        """Only the member of the group (b) is `staff` and may use `pii`."""
        sock = _peer_socket(peer_daemon)
        assert run_as(os_users.b, "encrypt", sock, "pii")["code"] == "OK"
        assert run_as(os_users.a, "encrypt", sock, "pii")["code"] == "PERMISSION_DENIED"

    def test_audit_names_the_process(self, peer_daemon, os_users):
        """The audit record carries the identity, uid and pid the kernel reported."""
        run_as(os_users.a, "encrypt", _peer_socket(peer_daemon), "default")
        ops = [r for r in peer_daemon.records() if r["event"] == "op"]
        assert ops[-1]["caller"] == "alice"
        assert ops[-1]["uid"] == str(os_users.a.uid)
        assert ops[-1]["rule_id"] == "alice-default"
        assert int(ops[-1]["pid"]) > 1

    def test_root_through_proxy(self, peer_daemon):
        """This test process (uid 0) is attested too and matches `uid:0`."""
        with grpc.insecure_channel(f"unix:{_peer_socket(peer_daemon)}") as channel:
            stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
            ct = stub.Encrypt(pb.EncryptRequest(key="pii", plaintext=b"root")).ciphertext
            assert stub.Decrypt(pb.DecryptRequest(ciphertext=ct)).plaintext == b"root"


class TestInternalSocket:
    """The internal gRPC socket is reachable by the daemon's user only."""

    def test_direct_connect_is_refused_by_the_filesystem(self, peer_daemon, os_users):
        """Both users get EACCES connecting to the internal socket; the directory is 0700."""
        internal = _peer_socket(peer_daemon).with_name(".peer.sock.d") / "grpc.sock"
        assert internal.exists()
        assert oct(internal.parent.stat().st_mode & 0o777) == "0o700"
        for user in (os_users.a, os_users.b):
            result = run_as(user, "direct", internal, str(internal))
            assert result["errno"] == "EACCES"

    def test_public_socket_mode(self, peer_daemon):
        """The public socket has exactly the configured mode."""
        assert _peer_socket(peer_daemon).stat().st_mode & 0o777 == 0o666


class _Context:
    """What the resolver reads from a call: only peer()."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


class TestAttestation:
    """Attestation at accept (real /proc, a real socket pair) and resolution by peer name."""

    POLICY = parse_policy(
        {"identities": {"me": {"exe": str(Path(sys.executable).resolve()), "uid": os.getuid()}}},
        "t",
    )

    def _resolve(self, tmp_path, attestations: Attestations, name: str):
        resolver = PeercredIdentity(tmp_path, PolicyHolder(self.POLICY), attestations)
        return resolver(_Context(f"unix:{tmp_path}/{name}"))

    def test_live_process_and_exe_identity(self, tmp_path):
        """This process, attested through a socket pair, resolves to the exe-defined identity."""
        ours, theirs = socket.socketpair(socket.AF_UNIX)
        with ours, theirs:
            attestation = attest(ours)
        assert attestation is not None
        assert (attestation.pid, attestation.start_time) == (
            os.getpid(),
            process_start_time(os.getpid()),
        )
        attestations = Attestations()
        attestations.add(attestation.socket_name(1), attestation)
        caller = self._resolve(tmp_path, attestations, attestation.socket_name(1))
        assert caller.name == "me"
        assert caller.attributes["exe"] == str(Path(sys.executable).resolve())
        assert caller.attributes["groups"] == ",".join(map(str, sorted(os.getgroups())))

    def test_closed_connection_is_unauthenticated(self, tmp_path):
        """A name whose connection is gone (or never was attested) is refused."""
        attestations = Attestations()
        attestation = Attestation(os.getuid(), os.getgid(), os.getpid(), 1)
        attestations.add(attestation.socket_name(1), attestation)
        attestations.remove(attestation.socket_name(1))
        with pytest.raises(UnauthenticatedError):
            self._resolve(tmp_path, attestations, attestation.socket_name(1))

    @pytest.mark.parametrize("peer", ["unix:", "unix:/elsewhere/0.0.1.2.3", "ipv4:1.2.3.4:5"])
    def test_peer_not_through_proxy(self, tmp_path, peer):
        """A peer that did not come through the proxy's directory is refused."""
        attestations = Attestations()
        attestations.add("0.0.1.2.3", Attestation(0, 0, 1, 2))
        resolver = PeercredIdentity(tmp_path, PolicyHolder(self.POLICY), attestations)
        with pytest.raises(UnauthenticatedError):
            resolver(_Context(peer))

    def test_gone_process(self, tmp_path):
        """A process that connected and exited before the proxy read /proc is not attested."""
        path = tmp_path / "s.sock"
        with socket.socket(socket.AF_UNIX) as listening:
            listening.bind(str(path))
            listening.listen()
            code = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
            subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
            accepted, _ = listening.accept()
            with accepted:
                assert attest(accepted) is None
