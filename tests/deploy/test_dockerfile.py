"""deploy/docker/Dockerfile: what the image is made of, each build step, and its runtime layout.

No Docker engine runs here, so the image is not built. Instead: the build stage's context
builds the wheel; the runtime stage's own account commands create the user; its directories
are made with its own `install -d` lines under a scratch root; and the daemon then runs from
the image's ENTRYPOINT and CMD as that user, on a read-only root (confine.py).
"""

from __future__ import annotations

import json
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

import pytest
from deploy.manifests import REPO, SYSTEMD_TOML, Stage, key_values, parse_dockerfile
from deploy.sandbox import KEYBROKER, ConfinedDaemon, Confinement, round_trip, run_confined, sh
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from broker import cli
from broker.config.schema import DEFAULT_SOCKET, DEFAULT_STATE_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from deploy.sandbox import Account

DOCKERFILE = parse_dockerfile()
BUILD = DOCKERFILE.stage("build")
RUNTIME = DOCKERFILE.stage("runtime")
CONFIG_IN_IMAGE = "/etc/keybroker/keybroker.toml"
SECRET_WORDS = re.compile(
    r"(token|secret|password|passphrase|master_key|private|credential)", re.IGNORECASE
)
INSTALLERS = {"pip", "setuptools", "wheel"}


def _extras(stage: Stage) -> set[str]:
    args = {k: v for i in stage.all("ARG") for k, v in key_values(i.args).items()}
    return set(args["KEYBROKER_EXTRAS"].split(","))


def _closure(name: str, extras: set[str]) -> set[str]:
    """Distributions a package with these extras needs, from the installed metadata."""
    seen: dict[str, frozenset[str]] = {}
    todo = [(name, frozenset(extras))]
    while todo:
        dist, wanted = todo.pop()
        key = canonicalize_name(dist)
        if key in seen and wanted <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | wanted
        for raw in metadata.requires(dist) or []:
            req = Requirement(raw)
            envs = [{"extra": e} for e in (wanted or {""})]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return set(seen)


def _healthcheck_argv() -> tuple[str, list[str]]:
    """The HEALTHCHECK options and its command (exec form)."""
    options, _, command = RUNTIME.one("HEALTHCHECK").args.partition("CMD ")
    return options, [str(word) for word in json.loads(command)]


def _install_dirs(stage: Stage) -> list[tuple[list[str], list[str]]]:
    """Each `install -d` of a stage as (options, directories)."""
    found = []
    for command in stage.run_commands():
        if command[:2] == ["install", "-d"]:
            paths = [w for w in command[2:] if w.startswith("/")]
            found.append(([w for w in command[2:] if w not in paths], paths))
    return found


class TestDockerfile:
    """The Dockerfile itself, instruction by instruction."""

    def test_two_stages_on_python_311_slim(self):
        """A build stage and a runtime stage, both from the python:3.11-slim image."""
        assert DOCKERFILE.args["PYTHON_IMAGE"].startswith("python:3.11-slim")
        assert [s.name for s in DOCKERFILE.stages] == ["build", "runtime"]
        assert all(s.base == "${PYTHON_IMAGE}" for s in DOCKERFILE.stages)

    def test_build_stage_builds_wheels_for_the_extras(self):
        """The build stage makes wheels for keybroker[aws,vault,gcp], extras pyproject defines."""
        assert _extras(BUILD) == {"aws", "vault", "gcp"}
        pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
        assert _extras(BUILD) <= set(pyproject["project"]["optional-dependencies"])
        assert "hsm" in pyproject["project"]["optional-dependencies"]
        steps = [" ".join(c) for c in BUILD.run_commands()]
        assert any("pip wheel" in s and "${KEYBROKER_EXTRAS}" in s for s in steps)
        assert any("--no-index" in s and "--prefix /install" in s for s in steps)

    def test_runtime_copies_only_the_installed_package(self):
        """The runtime stage copies /install from the build stage and no source file."""
        copies = [shlex.split(i.args) for i in RUNTIME.all("COPY")]
        assert copies == [["--from=build", "/install", "/usr/local"]]

    def test_runs_as_a_fixed_non_root_user(self):
        """USER is the numeric uid 10001 the Dockerfile creates, never root."""
        user = RUNTIME.one("USER").args
        assert user.split(":")[0] == "10001"
        accounts = {c[0]: c for c in RUNTIME.run_commands() if c[0] in ("groupadd", "useradd")}
        assert accounts["groupadd"][accounts["groupadd"].index("--gid") + 1] == "10001"
        assert accounts["useradd"][accounts["useradd"].index("--uid") + 1] == "10001"
        assert accounts["useradd"][-1] == "keybroker"

    def test_directories_belong_to_the_user(self):
        """/run/keybroker and /var/lib/keybroker are created 0750 and owned by keybroker."""
        owned = {}
        for options, paths in _install_dirs(RUNTIME):
            for path in paths:
                owned[path] = options
        expected = ["-m", "0750", "-o", "keybroker", "-g", "keybroker"]
        assert owned[str(DEFAULT_SOCKET.parent)] == expected
        assert owned[str(DEFAULT_STATE_DIR)] == expected
        assert RUNTIME.one("WORKDIR").args == str(DEFAULT_STATE_DIR)

    def test_entrypoint_and_cmd_serve_the_mounted_config(self):
        """ENTRYPOINT keybroker, CMD `serve --config /etc/keybroker/keybroker.toml`, valid flags."""
        assert RUNTIME.one("ENTRYPOINT").exec_form() == ["keybroker"]
        cmd = RUNTIME.one("CMD").exec_form()
        args = cli.entry._parser().parse_args(cmd)
        assert args.command == "serve"
        assert str(args.config) == CONFIG_IN_IMAGE
        assert not args.dev

    def test_healthcheck_runs_keybroker_healthcheck(self):
        """HEALTHCHECK runs `keybroker healthcheck` on the default socket, in exec form."""
        options, argv = _healthcheck_argv()
        assert argv[0] == "keybroker"
        args = cli.entry._parser().parse_args(argv[1:])
        assert args.command == "healthcheck"
        assert args.socket == str(DEFAULT_SOCKET)
        assert "--timeout=" in options
        assert "--interval=" in options

    def test_no_secret_is_baked_in(self):
        """No ENV, ARG or LABEL names a secret and nothing copies a key or an .env file."""
        for stage in DOCKERFILE.stages:
            for instruction in stage.instructions:
                if instruction.keyword in ("ENV", "ARG", "LABEL"):
                    names = key_values(instruction.args)
                    assert not [n for n in names if SECRET_WORDS.search(n)], instruction
                    assert not re.search(r"[0-9a-fA-F]{64}", instruction.args), instruction
                if instruction.keyword == "COPY":
                    assert not re.search(r"\.(key|pem|env)\b", instruction.args), instruction
        assert "ECL_CRYPTO_LOCAL_MASTER_KEY" not in (REPO / "deploy/docker/Dockerfile").read_text()

    def test_runtime_needs_no_installer(self):
        """Nothing keybroker[aws,vault,gcp] depends on is pip, setuptools or wheel (removed)."""
        needed = _closure("keybroker", _extras(BUILD))
        assert "grpcio" in needed
        assert "boto3" in needed
        assert not needed & INSTALLERS
        removal = [c for c in RUNTIME.run_commands() if "uninstall" in c]
        assert removal
        assert set(removal[0]) >= INSTALLERS


class TestBuildStage:
    """The build stage's context and wheel step, run here without Docker."""

    def test_context_builds_the_wheel(self, tmp_path):
        """The files the build stage COPYs build a wheel with the console script and gRPC code."""
        context = tmp_path / "src"
        context.mkdir()
        for instruction in BUILD.all("COPY"):
            *sources, dest = shlex.split(instruction.args)
            for source in sources:
                origin = REPO / source
                target = context / dest
                if origin.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                str(tmp_path / "wheels"),
                str(context),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        (wheel,) = (tmp_path / "wheels").glob("keybroker-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            info = next(n for n in names if n.endswith(".dist-info/METADATA"))
            meta = zf.read(info).decode()
            entry = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
        assert "keybroker = broker.cli:main" in entry
        assert {"broker/rpc/gen/envelope_pb2.py", "broker/py.typed", "broker/cli/entry.py"} <= names
        assert not [n for n in names if n.startswith(("tests/", "clients/", "deploy/"))]
        for extra in ("aws", "vault", "gcp", "hsm"):
            assert f"Provides-Extra: {extra}" in meta


def _rewrite(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is not in the example any more"
        text = text.replace(old, new)
    return text


@dataclass
class Running:
    """A started daemon and the scratch root standing for the image's filesystem."""

    daemon: ConfinedDaemon
    root: Path

    @property
    def socket(self) -> Path:
        """The example's socket under the scratch root."""
        return self.root / "run/keybroker/keybroker.sock"


@pytest.fixture(scope="class")
def image_daemon(image_user: Account, class_base: Path) -> Iterator[Running]:
    """The daemon as the image runs it: its user, its directories, its CMD, a read-only root.

    The configuration is the systemd example, with its directories moved under the scratch
    root and its AWS key replaced by a local:// key (no KMS here).
    """
    root = class_base / "root"
    for options, paths in _install_dirs(RUNTIME):
        sh("install", "-d", *options, *(f"{root}{p}" for p in paths))
    run_dir, state_dir = f"{root}{DEFAULT_SOCKET.parent}", f"{root}{DEFAULT_STATE_DIR}"
    config = root / CONFIG_IN_IMAGE.lstrip("/")
    config.write_text(
        _rewrite(
            SYSTEMD_TOML.read_text(),
            {
                f'"{DEFAULT_SOCKET.parent}/': f'"{run_dir}/',
                f'"{DEFAULT_STATE_DIR}"': f'"{state_dir}"',
                '"aws-kms://alias/keybroker-default"': '"local://default"',
            },
        )
    )
    config.chmod(0o644)
    cmd = [str(KEYBROKER), *RUNTIME.one("CMD").exec_form()]
    cmd[cmd.index(CONFIG_IN_IMAGE)] = str(config)
    env = {**key_values(RUNTIME.one("ENV").args), "HOME": state_dir}
    user = pwd.getpwuid(int(RUNTIME.one("USER").args.split(":")[0])).pw_name
    assert user == image_user.name
    confinement = Confinement(user, writable=[root / "run/keybroker", root / "var/lib/keybroker"])
    daemon = ConfinedDaemon(confinement, cmd, env, class_base)
    running = Running(daemon, root)
    daemon.start(running.socket)
    try:
        yield running
    finally:
        daemon.kill()


class TestImageRuntime:
    """The daemon started the way the image starts it works without root and without writes."""

    def test_socket_and_state_belong_to_the_image_user(self, image_daemon, image_user):
        """The socket is 0660 in a 0750 directory; keys and audit are 0600; all uid 10001."""
        root = image_daemon.root
        sock = (root / "run/keybroker/keybroker.sock").stat()
        assert (stat.S_IMODE(sock.st_mode), sock.st_uid) == (0o660, image_user.uid)
        run = (root / "run/keybroker").stat()
        assert (stat.S_IMODE(run.st_mode), run.st_uid) == (0o750, image_user.uid)
        for name in ("master.key", "keyring.json", "audit.log"):
            info = (root / "var/lib/keybroker" / name).stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, image_user.uid), name

    def test_encrypt_and_decrypt_over_the_socket(self, image_daemon):
        """Encrypt then Decrypt with the example's key and policy round-trips."""
        plaintext = b"image layout"
        assert round_trip(image_daemon.socket, "default", {"t": "1"}, plaintext) == plaintext

    def test_healthcheck_as_the_image_user(self, image_daemon, image_user):
        """The image's HEALTHCHECK command, run as uid 10001, exits 0 and prints SERVING."""
        _, argv = _healthcheck_argv()
        argv[0] = str(KEYBROKER)
        argv[argv.index(str(DEFAULT_SOCKET))] = str(image_daemon.socket)
        out = run_confined(Confinement(image_user.name), argv)
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().strip() == "SERVING"

    def test_group_member_uses_the_socket_and_others_cannot(self, image_daemon, app_user, outsider):
        """A member of group keybroker encrypts and decrypts with the CLI; others cannot connect."""
        env = {"KEYBROKER_SOCKET": str(image_daemon.socket)}
        app = Confinement(app_user.name)
        sealed = run_confined(app, [str(KEYBROKER), "encrypt", "--context", "t=1"], env, b"hi")
        assert sealed.returncode == 0, sealed.stderr
        opened = run_confined(
            app, [str(KEYBROKER), "decrypt", "--context", "t=1"], env, sealed.stdout
        )
        assert opened.stdout == b"hi"
        refused = run_confined(Confinement(outsider.name), [str(KEYBROKER), "healthcheck"], env)
        assert refused.returncode == 1
        assert "cannot reach the daemon" in refused.stderr.decode()

    def test_stops_cleanly_on_sigterm(self, image_daemon):
        """SIGTERM (the runtime's stop signal) ends the daemon with 0 and removes the socket."""
        code, _ = image_daemon.daemon.stop(timeout=30)
        assert code == 0
        assert not (image_daemon.socket).exists()
        assert image_daemon.daemon.events()[-1] == "stopped"
