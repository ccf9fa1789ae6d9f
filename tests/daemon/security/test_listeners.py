"""Several Unix listeners, each its own identity, with exactly the configured mode/owner/group."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from support.os_users import run_as
from support.secure_daemon import short_dir

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

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
kind = "unix"
path = "{run}/app-a.sock"
identity = "app-a"
owner = {uid_a}

[[listeners]]
kind = "unix"
path = "{run}/app-b.sock"
identity = "app-b"
group = "{group}"

[[listeners]]
kind = "unix"
path = "{run}/world.sock"
mode = "0606"
identity = "world"

[keys.a]
uri = "local://a"

[keys.b]
uri = "local://b"

[[policy.rules]]
id = "a-own-key"
callers = ["app-a"]
keys = ["a"]
operations = ["encrypt", "decrypt"]

[[policy.rules]]
id = "b-own-key"
callers = ["app-b"]
keys = ["b"]
operations = ["encrypt", "decrypt"]
"""


@pytest.fixture
def sidecar(configured, os_users):
    """One socket per app, as a Kubernetes sidecar would have."""
    return configured(CONFIG, uid_a=os_users.a.uid, group=os_users.group).start()


def _encrypt(daemon, socket: str, key: str) -> grpc.StatusCode:
    with daemon.connect(daemon.socket.with_name(socket)) as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        try:
            stub.Encrypt(pb.EncryptRequest(key=key, plaintext=b"x"))
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


class TestIdentities:
    """The socket a call arrives on decides who the caller is."""

    @pytest.mark.parametrize(
        ("socket", "key", "code"),
        [
            ("app-a.sock", "a", grpc.StatusCode.OK),
            ("app-a.sock", "b", grpc.StatusCode.PERMISSION_DENIED),
            ("app-b.sock", "b", grpc.StatusCode.OK),
            ("app-b.sock", "a", grpc.StatusCode.PERMISSION_DENIED),
            ("world.sock", "a", grpc.StatusCode.PERMISSION_DENIED),
            ("ops.sock", "a", grpc.StatusCode.PERMISSION_DENIED),
        ],
    )
    def test_per_socket_identity(self, sidecar, socket, key, code):
        """Each listener's fixed identity meets the policy."""
        assert _encrypt(sidecar, socket, key) == code

    def test_unknown_key_is_denied_not_found(self, sidecar):
        """Authorization runs first: a key the caller may not use is denied even if absent."""
        assert _encrypt(sidecar, "app-a.sock", "missing") == grpc.StatusCode.PERMISSION_DENIED


class TestOwnership:
    """Mode, owner and group exactly as configured, also when only one is set."""

    def test_stat(self, sidecar, os_users):
        """Owner only, group only, mode only: each applied, the rest left as the daemon's."""
        run = sidecar.socket.parent
        a, b, w, o = (run / n for n in ("app-a.sock", "app-b.sock", "world.sock", "ops.sock"))
        assert (a.stat().st_uid, a.stat().st_gid, a.stat().st_mode & 0o777) == (
            os_users.a.uid,
            0,
            0o660,
        )
        assert (b.stat().st_uid, b.stat().st_gid, b.stat().st_mode & 0o777) == (
            0,
            os_users.gid,
            0o660,
        )
        assert (w.stat().st_uid, w.stat().st_mode & 0o777) == (0, 0o606)
        assert o.stat().st_mode & 0o777 == 0o600

    def test_os_enforces_the_group(self, sidecar, os_users):
        """A member of the socket's group connects; a non-member gets EACCES from the kernel."""
        sock = sidecar.socket.with_name("app-b.sock")
        assert run_as(os_users.b, "direct", sock, str(sock))["errno"] == "connected"
        assert run_as(os_users.a, "direct", sock, str(sock))["errno"] == "EACCES"

    def test_os_enforces_the_owner(self, sidecar, os_users):
        """The socket's owner connects; another user gets EACCES."""
        sock = sidecar.socket.with_name("app-a.sock")
        assert run_as(os_users.a, "direct", sock, str(sock))["errno"] == "connected"
        assert run_as(os_users.b, "direct", sock, str(sock))["errno"] == "EACCES"


def _serve(config: str, *, root_ok: bool = True) -> subprocess.CompletedProcess[str]:
    base = short_dir()
    path = base / "kb.toml"
    text = config.format(state=base / "state", run=base)
    if root_ok:
        text = "[server]\nallow_root = true\n" + text
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


MINIMAL = """
[[listeners]]
kind = "unix"
path = "{run}/sock/kb.sock"
identity = "x"
[keys.default]
uri = "local://default"
"""


class TestRefusals:
    """The daemon refuses unsafe setups at start, with one line naming the fix."""

    def test_directory_writable_by_others(self):
        """A socket directory others may write is refused for every listener."""
        base = short_dir()
        (base / "sock").mkdir(mode=0o777)
        (base / "sock").chmod(0o777)
        path = base / "kb.toml"
        text = "[server]\nallow_root = true\n" + MINIMAL.format(run=base)
        path.write_text(text, encoding="utf-8")
        out = subprocess.run(
            [sys.executable, "-m", "broker", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=base,
        )
        assert out.returncode == 2
        assert "is writable by other users; run chmod o-w" in out.stderr

    def test_root_without_allow_root(self):
        """Running as root needs server.allow_root (tests run as root)."""
        out = _serve(MINIMAL, root_ok=False)
        assert out.returncode == 2
        assert "server.allow_root: refusing to run as root" in out.stderr

    def test_secret_in_readable_config(self):
        """A config file holding a secret must not be readable by others."""
        base = short_dir()
        path = base / "kb.toml"
        path.write_text(
            MINIMAL.format(run=base) + '[backends.vault]\ntoken = "s.abc"\n', encoding="utf-8"
        )
        path.chmod(0o644)
        out = subprocess.run(
            [sys.executable, "-m", "broker", "config", "check", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 2
        assert "backends.vault.token" in out.stderr
        assert "chmod 600" in out.stderr
        assert "s.abc" not in out.stderr

    def test_peercred_needs_a_policy(self):
        """A peercred listener without a policy is refused (deny by default)."""
        out = _serve(
            '[[listeners]]\nkind = "peercred"\npath = "{run}/p.sock"\n'
            '[keys.default]\nuri = "local://default"\n'
        )
        assert out.returncode == 2
        assert "need a [policy]" in out.stderr
