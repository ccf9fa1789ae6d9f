"""deploy/systemd/: the unit, the example configuration, sysusers and tmpfiles.

systemd is not PID 1 here, so the unit is not started by systemd. It is checked with
`systemd-analyze verify` and `security --offline`, and the daemon is run under the unit's own
sandbox settings, applied by confine.py the way systemd applies them: its user, UMask,
LimitCORE, NoNewPrivileges, a read-only root with only the runtime and state directories
writable (ProtectSystem=strict), and the seccomp filters of SystemCallFilter=,
SystemCallErrorNumber=, MemoryDenyWriteExecute= and RestrictAddressFamilies=.
"""

from __future__ import annotations

import errno
import grp
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import keybroker_client
import pytest
from deploy.manifests import (
    SYSTEMD_TOML,
    SYSUSERS,
    TMPFILES,
    UNIT,
    ini_parser,
    parse_dockerfile,
    parse_unit,
    seconds,
)
from deploy.sandbox import (
    KEYBROKER,
    ConfinedDaemon,
    Confinement,
    make_dir,
    round_trip,
    run_confined,
)

from broker import cli
from broker.config.listeners import parse_listeners
from broker.config.load import load_config
from broker.transport.peercred_proxy import FD_HEADROOM

if TYPE_CHECKING:
    from collections.abc import Iterator

    from deploy.sandbox import Account
    from integration.kms.servers import MotoServer

SERVICE = parse_unit()["Service"]
EXAMPLE_CONFIG = "/etc/keybroker/keybroker.toml"
RUN_DIR, STATE_DIR = "/run/keybroker", "/var/lib/keybroker"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def one(name: str) -> str:
    """The value of a [Service] setting given once."""
    (value,) = SERVICE[name]
    return value


def example_grace() -> float:
    """server.grace_seconds of the example configuration."""
    return load_config(SYSTEMD_TOML, env={}).server.grace_seconds


class TestServiceUnit:
    """keybroker.service, setting by setting."""

    def test_parses_as_ini(self):
        """Python's INI parser reads the unit: [Unit], [Service] and [Install]."""
        parser = ini_parser()
        assert parser.sections() == ["Unit", "Service", "Install"]
        assert parser["Install"]["WantedBy"] == "multi-user.target"

    def test_exec_start_serves_the_example_config(self):
        """ExecStart is `/usr/bin/keybroker serve --config /etc/keybroker/keybroker.toml`."""
        argv = shlex.split(one("ExecStart"))
        assert argv[0] == "/usr/bin/keybroker"
        args = cli.entry._parser().parse_args(argv[1:])
        assert (args.command, str(args.config), args.dev) == ("serve", EXAMPLE_CONFIG, False)

    def test_type_is_exec(self):
        """Type=exec: the daemon does not call sd_notify, so `notify` would never start."""
        assert one("Type") == "exec"
        assert "sd_notify" not in "".join(
            p.read_text() for p in Path(cli.__file__).parent.parent.rglob("*.py")
        )

    def test_reload_sends_sighup_and_stop_sends_sigterm(self):
        """ExecReload sends SIGHUP to the main process; KillSignal is SIGTERM."""
        assert shlex.split(one("ExecReload")) == ["/bin/kill", "-HUP", "$MAINPID"]
        assert one("KillSignal") == "SIGTERM"

    def test_stop_timeout_exceeds_grace(self):
        """TimeoutStopSec is above the example's server.grace_seconds."""
        assert seconds(one("TimeoutStopSec")) > example_grace()

    def test_user_and_directories_match_the_example(self):
        """User keybroker; socket in /run/keybroker (0750), state in /var/lib/keybroker (0700)."""
        cfg = load_config(SYSTEMD_TOML, env={})
        assert one("User") == "keybroker"
        assert (one("RuntimeDirectory"), one("RuntimeDirectoryMode")) == ("keybroker", "0750")
        assert (one("StateDirectory"), one("StateDirectoryMode")) == ("keybroker", "0700")
        assert str(cfg.server.state_dir) == STATE_DIR
        assert [str(lc.path.parent) for lc in cfg.listeners] == [RUN_DIR]

    def test_hardening_settings(self):
        """The sandbox settings docs/deployment.md lists are all set."""
        expected = {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "ProtectKernelTunables": "yes",
            "ProtectKernelModules": "yes",
            "ProtectKernelLogs": "yes",
            "ProtectControlGroups": "yes",
            "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
            "RestrictNamespaces": "yes",
            "LockPersonality": "yes",
            "MemoryDenyWriteExecute": "yes",
            "LimitCORE": "0",
            "UMask": "0077",
            "CapabilityBoundingSet": "",
        }
        assert {name: one(name) for name in expected} == expected
        assert SERVICE["SystemCallFilter"][0] == "@system-service"
        for absent in ("PrivateUsers", "ProtectProc", "ProcSubset"):
            assert absent not in SERVICE, f"{absent} would break peercred listeners"

    def test_fd_limit_leaves_room_for_the_connection_caps(self):
        """LimitNOFILE=65536: a full peercred listener (3 fds a connection) stays far below it."""
        limit = int(one("LimitNOFILE"))
        assert limit == 65536
        (peercred,) = parse_listeners([{"kind": "peercred", "path": "/run/keybroker/p.sock"}], "t")
        assert 3 * peercred.max_connections + FD_HEADROOM < limit // 2

    @needs_analyze
    def test_systemd_analyze_verify(self, tmp_path):
        """`systemd-analyze verify` finds no error (ExecStart pointed at this venv's keybroker)."""
        unit = tmp_path / "keybroker.service"
        unit.write_text(UNIT.read_text().replace("/usr/bin/keybroker", str(KEYBROKER)))
        out = subprocess.run(
            [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
        )
        assert (out.returncode, out.stdout + out.stderr) == (0, "")

    @needs_analyze
    def test_security_exposure_is_low(self, tmp_path):
        """`systemd-analyze security --offline` rates the unit's exposure at most 2.0 ("OK")."""
        unit = tmp_path / "keybroker.service"
        unit.write_text(UNIT.read_text().replace("/usr/bin/keybroker", str(KEYBROKER)))
        out = subprocess.run(
            [ANALYZE, "security", "--offline=yes", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        last = out.stdout.strip().splitlines()[-1]
        assert "Overall exposure level for keybroker.service" in last, out.stdout + out.stderr
        assert float(last.split(":")[1].split()[0]) <= 2.0, last


class TestSysusersAndTmpfiles:
    """sysusers.d and tmpfiles.d snippets, applied to a scratch root with systemd's own tools."""

    @pytest.fixture
    def root(self, tmp_path, as_root) -> Path:
        """A scratch root with the two snippets installed under /usr/lib."""
        del as_root
        for tool, snippet in (("sysusers.d", SYSUSERS), ("tmpfiles.d", TMPFILES)):
            make_dir(tmp_path / "usr/lib" / tool, 0o755)
            shutil.copy(snippet, tmp_path / "usr/lib" / tool / "keybroker.conf")
        make_dir(tmp_path / "etc", 0o755)
        return tmp_path

    def _apply(self, tool: str, *args: str) -> None:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
        out = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr

    def test_sysusers_creates_the_image_account(self, root):
        """systemd-sysusers makes keybroker with uid and gid 10001, as the container image does."""
        self._apply("systemd-sysusers", f"--root={root}", "keybroker.conf")
        passwd = (root / "etc/passwd").read_text().splitlines()
        (entry,) = [line.split(":") for line in passwd if line.startswith("keybroker:")]
        assert entry[2:4] == ["10001", "10001"]
        assert entry[5:] == [STATE_DIR, "/usr/sbin/nologin"]
        useradd = next(
            c for c in parse_dockerfile().stage("runtime").run_commands() if c[0] == "useradd"
        )
        assert useradd[useradd.index("--uid") + 1] == entry[2]

    def test_tmpfiles_creates_the_config_directory(self, root):
        """systemd-tmpfiles makes /etc/keybroker 0750 and the config 0640, group keybroker."""
        self._apply("systemd-sysusers", f"--root={root}", "keybroker.conf")
        make_dir(root / "etc/keybroker", 0o755)
        (root / "etc/keybroker/keybroker.toml").write_text(SYSTEMD_TOML.read_text())
        self._apply("systemd-tmpfiles", "--create", f"--root={root}", "keybroker.conf")
        directory = (root / "etc/keybroker").stat()
        config = (root / "etc/keybroker/keybroker.toml").stat()
        assert (stat.S_IMODE(directory.st_mode), directory.st_uid, directory.st_gid) == (
            0o750,
            0,
            10001,
        )
        assert (stat.S_IMODE(config.st_mode), config.st_uid, config.st_gid) == (0o640, 0, 10001)


# ------------------------------------------------------------------------ the unit's sandbox


@cache
def _syscall_groups() -> dict[str, list[str]]:
    """Every @group systemd knows, with its members (names and nested groups)."""
    assert ANALYZE is not None
    out = subprocess.run(
        [ANALYZE, "syscall-filter"], capture_output=True, text=True, timeout=60, check=True
    )
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.stdout.splitlines():
        stripped = line.strip()
        if line.startswith("@"):
            current = groups.setdefault(stripped, [])
        elif line.startswith("#"):
            current = None  # the closing list of calls in no group
        elif current is not None and stripped and not stripped.startswith("#"):
            current.append(stripped)
    return groups


def _expand(names: list[str]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= _expand(_syscall_groups()[name]) if name.startswith("@") else {name}
    return found


def unit_confinement(writable: list[Path]) -> Confinement:
    """The unit's sandbox as confine.py applies it."""
    allowed: set[str] = set()
    for entry in SERVICE["SystemCallFilter"]:
        if entry.startswith("~"):
            allowed -= _expand(entry[1:].split())
        else:
            allowed |= _expand(entry.split())
    families = [getattr(socket, name) for name in one("RestrictAddressFamilies").split()]
    return Confinement(
        one("User"),
        writable=writable,
        read_only_root=one("ProtectSystem") == "strict",
        umask=int(one("UMask"), 8),
        no_core=one("LimitCORE") == "0",
        syscalls=sorted(allowed),
        syscall_errno=getattr(errno, one("SystemCallErrorNumber")),
        mdwe=one("MemoryDenyWriteExecute") == "yes",
        address_families=families,
    )


@dataclass
class Service:
    """The daemon started from ExecStart under the unit's sandbox, in a scratch root."""

    daemon: ConfinedDaemon
    root: Path

    @property
    def socket(self) -> Path:
        """The example's socket, under the scratch runtime directory."""
        return self.root / "run/keybroker/keybroker.sock"

    @property
    def state(self) -> Path:
        """The scratch state directory."""
        return self.root / "state/keybroker"


def start_service(
    root: Path, user: Account, config_text: str | None = None, env: dict[str, str] | None = None
) -> Service:
    """Make the unit's directories under root, write the config, run ExecStart confined.

    Without config_text the example configuration is used with its AWS key made local.
    """
    if ANALYZE is None:
        pytest.skip("systemd-analyze is needed to expand SystemCallFilter groups")
    assert user.name == one("User")
    gid = grp.getgrnam(one("Group")).gr_gid
    run = make_dir(root / "run/keybroker", int(one("RuntimeDirectoryMode"), 8), user.uid, gid)
    state = make_dir(root / "state/keybroker", int(one("StateDirectoryMode"), 8), user.uid, gid)
    text = SYSTEMD_TOML.read_text() if config_text is None else config_text
    if config_text is None:
        text = text.replace('"aws-kms://alias/keybroker-default"', '"local://default"')
    text = text.replace(f'"{RUN_DIR}/', f'"{run}/').replace(f'"{STATE_DIR}"', f'"{state}"')
    config = make_dir(root / "etc/keybroker", 0o750, 0, gid) / "keybroker.toml"
    config.write_text(text)
    os.chown(config, 0, gid)
    config.chmod(0o640)
    argv = shlex.split(one("ExecStart"))
    argv[0] = str(KEYBROKER)
    argv[argv.index(EXAMPLE_CONFIG)] = str(config)
    confinement = unit_confinement([run, state])
    daemon = ConfinedDaemon(confinement, argv, {"HOME": str(state), **(env or {})}, root)
    service = Service(daemon, root)
    daemon.start(service.socket)
    return service


@pytest.fixture(scope="class")
def service(class_base: Path, image_user: Account) -> Iterator[Service]:
    """The example configuration (local key) served under the unit's sandbox."""
    running = start_service(class_base, image_user)
    try:
        yield running
    finally:
        running.daemon.kill()


class TestServiceSandbox:
    """The daemon as keybroker.service runs it: ExecStart, ExecReload, KillSignal, hardening."""

    def test_serves_under_the_sandbox(self, service):
        """Encrypt and Decrypt work, the socket is 0660 and the state files 0600."""
        assert round_trip(service.socket, "default", {"t": "1"}, b"systemd") == b"systemd"
        assert stat.S_IMODE(service.socket.stat().st_mode) == 0o660
        for name in ("master.key", "keyring.json", "audit.log"):
            assert stat.S_IMODE((service.state / name).stat().st_mode) == 0o600, name

    def test_reload_reloads_policy_and_reopens_audit(self, service):
        """ExecReload after a rename: policy reloaded, a new audit.log starts, the chain holds."""
        (service.state / "audit.log").rename(service.state / "audit.log.1")
        reload = [
            w.replace("$MAINPID", str(service.daemon.pid)) for w in shlex.split(one("ExecReload"))
        ]
        subprocess.run(reload, check=True, timeout=30)
        deadline = time.monotonic() + 10
        while "audit_reopened" not in service.daemon.events() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {"policy_reloaded", "audit_reopened"} <= set(service.daemon.events())
        assert round_trip(service.socket, "default", {"t": "2"}, b"after") == b"after"
        out = subprocess.run(
            [
                *(sys.executable, "-m", "broker", "audit", "verify"),
                *(str(service.state / "audit.log.1"), str(service.state / "audit.log")),
                *("--state-dir", str(service.state)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr

    def test_stops_within_timeout_stop_sec(self, service):
        """KillSignal ends the daemon with 0 within TimeoutStopSec; the socket is removed."""
        limit = seconds(one("TimeoutStopSec"))
        code, took = service.daemon.stop(timeout=limit)
        assert code == 0
        assert took < limit
        assert not service.socket.exists()


FILTER_PROBE = """
import ctypes, mmap, socket
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError as exc:
    print(exc.errno)
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
except OSError as exc:
    print(exc.errno)
libc = ctypes.CDLL(None, use_errno=True)
nr = ctypes.CDLL("libseccomp.so.2").seccomp_syscall_resolve_name(b"seccomp")
action = ctypes.c_uint32(0x7FFF0000)  # SECCOMP_GET_ACTION_AVAIL for ALLOW: 0 when unfiltered
print(libc.syscall(nr, 2, 0, ctypes.byref(action)), ctypes.get_errno())
"""

ALL_FAMILIES = """
[[listeners]]
kind = "unix"
path = "/run/keybroker/keybroker.sock"
identity = "tests"
[keys.default]
uri = "local://default"
[keys.signing]
uri = "local://signing"
purpose = "signing"
[keys.hmac]
uri = "local://hmac"
purpose = "hmac"
[server]
state_dir = "/var/lib/keybroker"
[[policy.rules]]
id = "everything"
callers = ["tests"]
keys = ["*"]
operations = ["*"]
"""


class TestSandboxCompatibility:
    """What MemoryDenyWriteExecute and the syscall filters could break, exercised for real."""

    def test_crypto_families_work_under_the_filters(self, base, image_user):
        """Envelope, ECDSA, HMAC, Argon2id, tokens and rotation all work (no W+X memory needed)."""
        svc = start_service(base, image_user, ALL_FAMILIES)
        try:
            with keybroker_client.Client(svc.socket) as kb:
                sealed = kb.encrypt(b"x" * 100_000, key="default", context={"t": "1"})
                assert kb.decrypt(sealed, context={"t": "1"}) == b"x" * 100_000
                signature = kb.sign(b"data", key="signing")
                assert kb.verify(b"data", signature, key="signing")
                assert kb.hmac_verify(b"data", kb.hmac(b"data", key="hmac"), key="hmac")
                assert kb.verify_password("pw", kb.hash_password("pw"))
                assert len(kb.token(16, encoding="bytes")) == 16
                assert kb.rotate_key("default").current_version == 2
            assert svc.daemon.stop(timeout=30)[0] == 0
            assert not [r for r in svc.daemon.records() if r.get("level") == "error"]
        finally:
            svc.daemon.kill()

    def test_aws_kms_backend_works_under_the_filters(self, base, image_user, moto: MotoServer):
        """The example's own aws-kms key (on moto) works: boto3 under MDWE and the filters."""
        text = SYSTEMD_TOML.read_text()
        region = load_config(SYSTEMD_TOML, env={}).backends["aws"]["region"]
        alias = "alias/keybroker-default"
        assert f'"aws-kms://{alias}"' in text
        kms = moto.client(region_name=region)
        kms.create_alias(AliasName=alias, TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
        env = {
            "AWS_ACCESS_KEY_ID": moto.access_key_id,  # what keybroker.env would hold
            "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
            "AWS_ENDPOINT_URL": moto.url,
        }
        svc = start_service(base, image_user, text, env)
        try:
            assert round_trip(svc.socket, "default", {"t": "1"}, b"via kms") == b"via kms"
            assert svc.daemon.stop(timeout=30)[0] == 0
        finally:
            svc.daemon.kill()

    def test_filters_are_in_force(self, base, image_user):
        """Under that confinement W+X memory, AF_PACKET and seccomp(2) itself are refused."""
        if ANALYZE is None:
            pytest.skip("systemd-analyze is needed to expand SystemCallFilter groups")
        assert image_user.name == one("User")
        out = run_confined(unit_confinement([base]), [sys.executable, "-c", FILTER_PROBE])
        assert out.stdout.decode().split() == [
            str(errno.EPERM),  # MemoryDenyWriteExecute
            str(errno.EAFNOSUPPORT),  # RestrictAddressFamilies
            "-1",  # SystemCallFilter: seccomp(2) is not in @system-service
            str(errno.EPERM),  # SystemCallErrorNumber
        ], out.stderr.decode()
