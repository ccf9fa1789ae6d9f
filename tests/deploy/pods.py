"""A pod of a manifest simulated on this host: volumes as the kubelet makes them, run confined.

No cluster runs here. Each volume a container mounts becomes a host directory made the way
the kubelet makes it with fsGroup: an emptyDir world-writable and setgid, group fsGroup; the
files of a ConfigMap, Secret or projected volume owned by root, group fsGroup, their mode the
volume's defaultMode plus group read (fsGroup adds it to every file of such a volume). A
container runs through confine.py with its command or args, env and uid, on a read-only root
where only its emptyDir volumes are writable; every path it names is moved to its volume's
host directory. The stand-in for the KMS (moto with IRSA) lives here too, shared by manifests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.manifests import (
    app_containers,
    configmap_toml,
    env_of,
    mount_for,
    only,
    sidecar,
    volume,
)
from deploy.sandbox import (
    KEYBROKER,
    PATH,
    ConfinedDaemon,
    Confinement,
    empty_dir,
    make_dir,
    run_confined,
)

from broker import cli

if TYPE_CHECKING:
    import subprocess

    from deploy.sandbox import Account
    from integration.kms.servers import MotoServer

KUBELET_GROUP_READ = 0o440  # what fsGroup adds to the mode of a ConfigMap/Secret/projected file
IMAGE_HOME = "/var/lib/keybroker"  # the image user's home directory


def config_path(container: dict[str, Any]) -> str:
    """The --config a container passes, read with the daemon's own parser."""
    args = cli.entry._parser().parse_args(container["args"])
    return str(args.config)


def listener_socket(config: dict[str, Any]) -> str:
    """The one unix listener's socket path in a configuration."""
    (listener,) = config["listeners"]
    return str(listener["path"])


def kubelet_file(path: Path, content: str, mode: int, fs_group: int) -> None:
    """A file of a ConfigMap, Secret or projected volume, as the kubelet leaves it."""
    path.write_text(content)
    os.chown(path, 0, fs_group)
    path.chmod(mode | KUBELET_GROUP_READ)


def _fill(
    source: dict[str, Any],
    host: Path,
    docs: list[dict[str, Any]],
    provided: dict[str, str],
    fs_group: int,
) -> None:
    """Write a ConfigMap/Secret volume's files: the manifest's own ConfigMap, else `provided`."""
    kind = "configMap" if "configMap" in source else "secret"
    ref = source[kind]
    own = only(docs, "ConfigMap") if kind == "configMap" else None
    data = own["data"] if own and own["metadata"]["name"] == ref["name"] else provided
    assert data, f"no content for the {kind} volume {source['name']}"
    items = {i["key"]: i["path"] for i in ref.get("items", [])} or {k: k for k in data}
    for key, relative in items.items():
        kubelet_file(host / relative, data[key], ref.get("defaultMode", 0o644), fs_group)


def make_volumes(
    spec: dict[str, Any],
    docs: list[dict[str, Any]],
    base: Path,
    provided: dict[str, dict[str, str]] | None = None,
) -> dict[str, Path]:
    """Host directories for every volume a container of the pod mounts (volume name -> dir).

    `provided` holds the files of the ConfigMaps and Secrets the manifest only refers to
    (made by the operator), by volume name.
    """
    fs_group = spec["securityContext"]["fsGroup"]
    mounted = {m["name"] for c in _containers(spec) for m in c.get("volumeMounts", [])}
    volumes = {}
    for name in sorted(mounted):
        source = volume(spec, name)
        host = base / name
        if "emptyDir" in source:
            empty_dir(host, fs_group, memory=source["emptyDir"].get("medium") == "Memory")
        else:
            make_dir(host, 0o755)
            if "projected" in source:
                token = source["projected"]["sources"][0]["serviceAccountToken"]
                mode = source["projected"]["defaultMode"]
                kubelet_file(host / token["path"], "", mode, fs_group)
            else:
                _fill(source, host, docs, (provided or {}).get(name, {}), fs_group)
        volumes[name] = host
    return volumes


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@dataclass
class Pod:
    """One simulated pod: its manifest, pod spec, volume directories and running sidecar."""

    docs: list[dict[str, Any]]
    spec: dict[str, Any]
    base: Path
    volumes: dict[str, Path]  # volume name -> host directory
    secret_env: dict[str, str] = field(default_factory=dict)  # env name -> its Secret's value
    sidecar_env: dict[str, str] = field(default_factory=dict)  # the env the sidecar started with
    daemon: ConfinedDaemon | None = None

    @property
    def pod(self) -> dict[str, Any]:
        """The pod spec."""
        return self.spec

    def container(self, name: str) -> dict[str, Any]:
        """A container (init or regular) by name."""
        return next(c for c in _containers(self.spec) if c["name"] == name)

    def host(self, path: str, container: dict[str, Any] | None = None) -> str:
        """Where a path inside a container (by default the sidecar) lives on this host."""
        mount = mount_for(container or sidecar(self.spec), path)
        assert mount is not None, f"{path} is on no volume"
        return str(self.volumes[mount["name"]]) + path[len(mount["mountPath"]) :]

    def moved(self, path: str, container: dict[str, Any]) -> str:
        """A path on a volume of the container moved to this host; any other path unchanged."""
        return self.host(path, container) if mount_for(container, path) else path

    @property
    def config(self) -> dict[str, Any]:
        """The ConfigMap's configuration (paths as the containers see them)."""
        return tomllib.loads(configmap_toml(self.docs))

    @property
    def socket(self) -> str:
        """The listener's socket on this host."""
        return self.host(listener_socket(self.config))

    @property
    def sidecar(self) -> ConfinedDaemon:
        """The running sidecar."""
        assert self.daemon is not None
        return self.daemon


def simulate(
    docs: list[dict[str, Any]],
    spec: dict[str, Any],
    base: Path,
    provided: dict[str, dict[str, str]] | None = None,
) -> Pod:
    """The pod's volumes made under base (which every user may traverse)."""
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    return Pod(docs, spec, base, make_volumes(spec, docs, base, provided))


def localize_config(pod: Pod, container: dict[str, Any]) -> Path:
    """Rewrite the mounted config so its paths point at this host's volume directories."""
    config = Path(pod.host(config_path(container), container))
    text = re.sub(
        r'"(/[^"]*)"', lambda m: json.dumps(pod.moved(m.group(1), container)), config.read_text()
    )
    config.write_text(text)
    return config


def argv_of(pod: Pod, container: dict[str, Any]) -> list[str]:
    """The container's command line on this host (the image's entrypoint is keybroker)."""
    words = [*container.get("command", ["keybroker"]), *container.get("args", [])]
    program = str(KEYBROKER) if words[0] == "keybroker" else shutil.which(words[0], path=PATH)
    assert program is not None, f"{words[0]} is not on this host"
    words[0] = program
    return [words[0], *(pod.moved(w, container) if w.startswith("/") else w for w in words[1:])]


def _home(pod: Pod, container: dict[str, Any]) -> str:
    """The image user's home: its volume when mounted, else the image's empty directory."""
    if mount_for(container, IMAGE_HOME):
        return pod.host(IMAGE_HOME, container)
    ctx = container["securityContext"]
    home = make_dir(pod.base / f"home-{container['name']}", 0o750)
    os.chown(home, ctx["runAsUser"], ctx["runAsGroup"])
    return str(home)


def env_of_container(pod: Pod, container: dict[str, Any]) -> dict[str, str]:
    """The container's env on this host: Secret values filled in, paths moved, HOME set."""
    env = {"HOME": _home(pod, container)}
    for name, entry in env_of(container).items():
        if "valueFrom" in entry:
            env[name] = pod.secret_env[name]  # the Secret kubectl would have created
        else:
            value = entry["value"]
            env[name] = pod.moved(value, container) if value.startswith("/") else value
    return env


def confinement(pod: Pod, container: dict[str, Any], user: Account) -> Confinement:
    """The container's user and read-only root, with its emptyDir volumes writable."""
    assert container["securityContext"]["runAsUser"] == user.uid
    writable = [
        pod.volumes[m["name"]]
        for m in container.get("volumeMounts", [])
        if "emptyDir" in volume(pod.spec, m["name"]) and not m.get("readOnly")
    ]
    return Confinement(user.name, writable=writable)


def run_container(
    pod: Pod, container: dict[str, Any], user: Account, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a run-to-completion container (an init container, a Job's) and wait for it."""
    env = {**env_of_container(pod, container), **(extra_env or {})}
    return run_confined(confinement(pod, container, user), argv_of(pod, container), env)


def start_sidecar(pod: Pod, user: Account, extra_env: dict[str, str], logs: Path) -> Pod:
    """Start the sidecar as its container would run and wait until it serves."""
    container = sidecar(pod.spec)
    pod.sidecar_env = {**env_of_container(pod, container), **extra_env}
    command = argv_of(pod, container)
    jail = confinement(pod, container, user)
    pod.daemon = ConfinedDaemon(jail, command, pod.sidecar_env, logs)
    pod.sidecar.start(Path(pod.socket))
    return pod


def app_cli(
    pod: Pod, user: Account, argv: list[str], stdin: bytes
) -> subprocess.CompletedProcess[bytes]:
    """The keybroker CLI run as the app container's process would run it (as `user`)."""
    app = app_containers(pod.spec)[0]
    env = {"KEYBROKER_SOCKET": pod.host(env_of(app)["KEYBROKER_SOCKET"]["value"])}
    return run_confined(Confinement(user.name), [str(KEYBROKER), *argv], env, stdin)


class IrsaKms:
    """AWS KMS for a manifest using IRSA: moto, its STS taking the projected token's place.

    One KMS key per role, made in the role's account (moto keeps one KMS per account), and
    written into every config that names an `aws-kms://arn:…` key in its place.
    """

    def __init__(self, moto: MotoServer) -> None:
        """Use this moto_server for STS and KMS."""
        self.moto = moto
        self._keys: dict[str, str] = {}

    def key_arn(self, role_arn: str, region: str) -> str:
        """The KMS key of this role (made on first use, as the role)."""
        if role_arn not in self._keys:
            creds = self.moto.client("sts", region_name=region).assume_role_with_web_identity(
                RoleArn=role_arn, RoleSessionName="setup", WebIdentityToken="setup"
            )["Credentials"]
            kms = self.moto.client(
                "kms",
                region_name=region,
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
            arn = kms.create_key()["KeyMetadata"]["Arn"]
            assert arn.split(":")[4] == role_arn.split(":")[4]
            self._keys[role_arn] = arn
        return self._keys[role_arn]

    def prepare(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        """Write the projected token, point the config at the role's key; the extra env."""
        role_arn = env_of(container)["AWS_ROLE_ARN"]["value"]
        token = Path(pod.host(env_of(container)["AWS_WEB_IDENTITY_TOKEN_FILE"]["value"]))
        token.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.")
        arn = self.key_arn(role_arn, pod.config["backends"]["aws"]["region"])
        config = Path(pod.host(config_path(container)))
        uri = json.dumps(f"aws-kms://{arn}")
        config.write_text(re.sub(r'"aws-kms://arn:aws:kms:[^"]+"', uri, config.read_text()))
        return {"AWS_ENDPOINT_URL": self.moto.url}  # STS and KMS are moto's
