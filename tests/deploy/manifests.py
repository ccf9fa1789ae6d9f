"""Reading the deployment files the way their consumers do: Docker, Kubernetes, systemd."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
SIDECAR_YAML = KUBERNETES / "keybroker-sidecar.yaml"
VAULT_YAML = KUBERNETES / "keybroker-vault.yaml"
FLEET_YAML = KUBERNETES / "keybroker-fleet.yaml"
SYSTEMD = DEPLOY / "systemd"
UNIT = SYSTEMD / "keybroker.service"
SYSTEMD_TOML = SYSTEMD / "keybroker.toml"
SYSUSERS = SYSTEMD / "sysusers.d" / "keybroker.conf"
TMPFILES = SYSTEMD / "tmpfiles.d" / "keybroker.conf"
SIDECAR_NAME = "keybroker"


# ------------------------------------------------------------------------------ Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and the rest of the line."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT, CMD)."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec form"
        return [str(v) for v in value]


@dataclass
class Stage:
    """A build stage: its base image, its name and its instructions."""

    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Every instruction with that keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        """The only (or last, as Docker applies it) instruction with that keyword."""
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]

    def run_commands(self) -> list[list[str]]:
        """Every RUN as simple commands: split on `&&`, words as the shell would see them."""
        commands = []
        for run in self.all("RUN"):
            text = re.sub(r"^(--\S+\s+)+", "", run.args)
            commands += [shlex.split(part) for part in text.split("&&") if part.strip()]
        return commands


@dataclass
class Dockerfile:
    """Global ARGs (with defaults) and the stages."""

    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """The stage named `name`."""
        return next(s for s in self.stages if s.name == name)


def _logical_lines(text: str) -> list[str]:
    """Join continuation lines; drop comments and blank lines, as Docker does."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """The instructions of a Dockerfile, grouped by stage."""
    parsed = Dockerfile({}, [])
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            parsed.stages.append(Stage(words[0], name))
        elif not parsed.stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = args.partition("=")
            parsed.args[name] = default
        else:
            parsed.stages[-1].instructions.append(Instruction(keyword, args))
    return parsed


def key_values(args: str) -> dict[str, str]:
    """`ENV`/`LABEL`/`ARG` arguments as a mapping (KEY=VALUE pairs, quotes removed)."""
    out = {}
    for word in shlex.split(args):
        name, sep, value = word.partition("=")
        out[name] = value if sep else ""
    return out


# ------------------------------------------------------------------------------ Kubernetes


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file, as kubectl would send them (empty ones skipped)."""
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single document of a kind."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod template spec."""
    spec: dict[str, Any] = only(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def job_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Job's pod template spec."""
    spec: dict[str, Any] = only(docs, "Job")["spec"]["template"]["spec"]
    return spec


def sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    """The keybroker container, a native sidecar (init container) or a regular one."""
    every = [*pod.get("initContainers", []), *pod.get("containers", [])]
    found = [c for c in every if c["name"] == SIDECAR_NAME]
    assert len(found) == 1, "one keybroker container"
    return found[0]


def app_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The application containers (every regular container but the sidecar)."""
    return [c for c in pod["containers"] if c["name"] != SIDECAR_NAME]


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """A pod volume by name."""
    return next(v for v in pod["volumes"] if v["name"] == name)


def mount_for(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volume mount that holds path in a container (the longest matching mountPath)."""
    candidates = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    return max(candidates, key=lambda m: len(m["mountPath"]), default=None)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env entries by name."""
    return {e["name"]: e for e in container.get("env", [])}


def configmap_toml(docs: list[dict[str, Any]]) -> str:
    """The keybroker.toml the ConfigMap carries."""
    text: str = only(docs, "ConfigMap")["data"]["keybroker.toml"]
    return text


def quantity_bytes(value: str) -> int:
    """A Kubernetes memory quantity in bytes (binary and decimal suffixes)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(value[: -len(suffix)]) * factor
    return int(value)


# ------------------------------------------------------------------------------ systemd


def parse_unit(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file; a setting given several times keeps every value, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        name, sep, value = line.partition("=")
        assert sep, f"not a setting: {line}"
        current.setdefault(name.strip(), []).append(value.strip())
    return sections


def ini_parser(path: Path = UNIT) -> configparser.ConfigParser:
    """The unit read by Python's INI parser (repeated settings allowed, no interpolation)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign] - keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return parser


def seconds(value: str) -> float:
    """A systemd time span (`30`, `30s`, `1min 30s`, `500ms`) in seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit or "s"]
    return total
