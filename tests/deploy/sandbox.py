"""Accounts, confined processes and simulated volumes for the deployment tests.

Processes run through confine.py: as another OS user, in a private mount namespace with a
read-only root (what a container or ProtectSystem=strict gives), optionally under systemd's
seccomp filters. Every process started here is tracked by its pid and ended by that pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

CONFINE = Path(__file__).with_name("confine.py")
KEYBROKER = Path(sys.executable).parent / "keybroker"
REPO = Path(__file__).resolve().parents[2]
PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Account:
    """An OS account; `created` when the tests made it (and so remove it)."""

    name: str
    uid: int
    gid: int
    created: bool = False


def account(name: str, *, created: bool = False) -> Account:
    """The account's uid and primary gid."""
    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid, created)


def sh(*argv: str) -> None:
    """Run an administration command (useradd, mount...); raise with its output on failure."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"{' '.join(argv)}: {out.stderr or out.stdout}"


def add_user(name: str, groups: tuple[str, ...] = ()) -> Account:
    """A system account without a home, in its own group and the given supplementary groups."""
    extra = ["-G", ",".join(groups)] if groups else []
    sh("useradd", "--system", "-M", "-U", "-s", "/usr/sbin/nologin", *extra, name)
    return account(name, created=True)


def remove_user(user: Account) -> None:
    """Delete an account the tests created (and its group of the same name)."""
    if not user.created:
        return
    subprocess.run(["userdel", user.name], capture_output=True, check=False, timeout=60)
    with contextlib.suppress(KeyError):
        grp.getgrnam(user.name)
        subprocess.run(["groupdel", user.name], capture_output=True, check=False, timeout=60)


def short_dir(prefix: str) -> Path:
    """A short (sun_path-friendly) directory under /tmp that every user may traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def make_dir(path: Path, mode: int, uid: int = 0, gid: int = 0) -> Path:
    """A directory with exactly this mode and owner (parents created 0755 as root)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def empty_dir(path: Path, fs_group: int, *, memory: bool) -> Path:
    """A directory as the kubelet leaves an emptyDir with fsGroup: world-writable, setgid.

    A disk-backed emptyDir is created 0777 and a Memory one is a tmpfs, whose root is 1777;
    fsGroup then makes the group fs_group and adds the setgid bit.
    """
    return make_dir(path, (0o3777 if memory else 0o2777), 0, fs_group)


@dataclass
class Confinement:
    """How a process is confined: the user, the writable paths and systemd's filters."""

    user: str
    writable: list[Path] = field(default_factory=list)
    read_only_root: bool = True
    umask: int | None = None
    no_core: bool = False
    syscalls: list[str] | None = None
    syscall_errno: int = errno.EPERM
    mdwe: bool = False
    address_families: list[int] | None = None

    def argv(self, command: list[str], env: dict[str, str]) -> list[str]:
        """The command line that runs `command` confined, with exactly `env`."""
        spec = dataclasses.asdict(self)
        spec["writable"] = [str(p) for p in self.writable]
        spec["env"] = {"PATH": PATH, "LANG": "C.UTF-8", **env}
        spec["reachable"] = sorted(
            {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(REPO)}
        )
        return [sys.executable, str(CONFINE), json.dumps(spec), "--", *command]


def run_confined(
    confinement: Confinement,
    command: list[str],
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run a short command confined and wait for it."""
    return subprocess.run(
        confinement.argv(command, env or {}),
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def serving(socket: Path) -> bool:
    """Whether the daemon on socket reports SERVING (asked as root, who may connect)."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class ConfinedDaemon:
    """`keybroker serve` started through confine.py; stdout and stderr kept in files."""

    def __init__(
        self, confinement: Confinement, command: list[str], env: dict[str, str], logs: Path
    ) -> None:
        """Prepare; `start()` runs it."""
        self.argv = confinement.argv(command, env)
        self.stdout_path = logs / "daemon.stdout"
        self.stderr_path = logs / "daemon.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The daemon's process id (confine.py execs it, so it is the Popen's pid)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, socket: Path, timeout: float = 60.0) -> ConfinedDaemon:
        """Spawn and wait until the daemon serves on socket."""
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"daemon exited with {self.proc.returncode}:\n{self.stderr()}"
                raise RuntimeError(msg)
            if socket.exists() and serving(socket):
                return self
            time.sleep(0.1)
        self.kill()
        msg = f"daemon did not serve on {socket} within {timeout}s:\n{self.stderr()}"
        raise RuntimeError(msg)

    def run_to_exit(self, timeout: float = 60.0) -> int:
        """Spawn and wait for the process to end by itself (for refused configurations)."""
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the daemon."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        return code, time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL by pid if still running (cleanup after a failure)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def stdout(self) -> str:
        """What the daemon wrote to stdout (audit records when audit.stdout is on)."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        """What the daemon wrote to stderr (its JSON log)."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def records(self) -> list[dict[str, object]]:
        """Every JSON line of the daemon's log, in order."""
        found = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def events(self) -> list[str]:
        """The `event` of every log record, in order."""
        return [str(record.get("event")) for record in self.records()]

    def peak_rss_bytes(self) -> int:
        """The daemon's peak resident memory so far (VmHWM)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match, "no VmHWM in /proc/PID/status"
        return int(match.group(1)) * 1024


def round_trip(socket: Path, key: str, context: dict[str, str], plaintext: bytes) -> bytes:
    """Encrypt then Decrypt over the socket (as root); the plaintext that came back."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        sealed = stub.Encrypt(
            pb.EncryptRequest(key=key, plaintext=plaintext, context=context), timeout=30
        )
        opened = stub.Decrypt(
            pb.DecryptRequest(ciphertext=sealed.ciphertext, context=context), timeout=30
        )
    assert sealed.ciphertext != plaintext
    return opened.plaintext


def encrypt_code(socket: Path, key: str, context: dict[str, str]) -> grpc.StatusCode:
    """The status an Encrypt call gets (OK or the error code)."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        try:
            stub.Encrypt(pb.EncryptRequest(key=key, plaintext=b"x", context=context), timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def remove_tree(path: Path) -> None:
    """Remove a test directory tree."""
    shutil.rmtree(path, ignore_errors=True)
