"""deploy/kubernetes/: the manifests parse, promise what docs/deployment.md says, and work.

No cluster runs here. The pod is simulated instead (pods.py): its volumes are directories made
the way the kubelet makes them under fsGroup, the sidecar runs from the image's entrypoint with
the container's args, env, uid and read-only root (confine.py), and the probes and the
application run as their own users. The KMS is stood in for: for the AWS manifest, moto's KMS
reached with credentials from the IRSA variables through moto's STS; for the Vault manifest,
OpenBao with the Kubernetes auth method, reviewing the projected token. The fleet manifest's
pods run against PostgreSQL in test_kubernetes_fleet.py; its static checks are here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import secrets
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from deploy.manifests import (
    FLEET_YAML,
    SIDECAR_YAML,
    VAULT_YAML,
    app_containers,
    configmap_toml,
    env_of,
    mount_for,
    only,
    pod_spec,
    quantity_bytes,
    sidecar,
    volume,
    yaml_documents,
)
from deploy.pods import (
    IrsaKms,
    Pod,
    app_cli,
    config_path,
    listener_socket,
    localize_config,
    simulate,
    start_sidecar,
)
from deploy.sandbox import (
    KEYBROKER,
    ConfinedDaemon,
    Confinement,
    empty_dir,
    run_confined,
)
from integration.kms.openbao import OpenBaoServer, TokenReviewApi, transit_policy

from broker import cli
from broker.config.load import load_config
from broker.kms.registry import REMOTE_SCHEMES, settings_from
from broker.kms.resilience import ResilienceSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from deploy.sandbox import Account

STABLE_API_VERSIONS = {"v1", "apps/v1", "batch/v1"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# Measured peak RSS of the sidecar (AWS backend, audit on) is ~80 MiB; the manifests budget
# 128 MiB for everything but password hashing (docs/deployment.md, "Sizing").
BASELINE_BYTES = 128 << 20
MANIFESTS = [SIDECAR_YAML, VAULT_YAML, FLEET_YAML]
KINDS = ["ConfigMap", "Deployment", "ServiceAccount"]


@pytest.fixture(params=MANIFESTS, ids=lambda p: p.name)
def manifest(request) -> list[dict[str, Any]]:
    """The documents of one manifest file."""
    return yaml_documents(request.param)


@pytest.fixture
def config_file(manifest, tmp_path) -> Path:
    """The ConfigMap's keybroker.toml written as the kubelet mounts it (mode 0444)."""
    path = tmp_path / "keybroker.toml"
    path.write_text(configmap_toml(manifest))
    path.chmod(0o444)
    return path


class TestManifest:
    """Each manifest, read as kubectl reads it."""

    def test_documents_parse_with_stable_api_versions(self, manifest):
        """A ServiceAccount, a ConfigMap, a Deployment (the fleet adds a Job), all stable APIs."""
        kinds = sorted(d["kind"] for d in manifest)
        assert kinds in (KINDS, sorted([*KINDS, "Job"]))
        assert {d["apiVersion"] for d in manifest} <= STABLE_API_VERSIONS
        assert only(manifest, "Deployment")["apiVersion"] == "apps/v1"

    def test_every_container_is_confined(self, manifest):
        """Every container of every pod: non-root, read-only root, no escalation or capability."""
        jobs = [d["spec"]["template"]["spec"] for d in manifest if d["kind"] == "Job"]
        specs = [pod_spec(manifest), *jobs]
        for spec in specs:
            assert spec["securityContext"]["runAsNonRoot"] is True
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                ctx = container["securityContext"]
                assert ctx["runAsUser"] >= 10001, container["name"]
                assert ctx["readOnlyRootFilesystem"] is True, container["name"]
                assert ctx["allowPrivilegeEscalation"] is False, container["name"]
                assert ctx["capabilities"] == {"drop": ["ALL"]}, container["name"]
                assert "memory" in container["resources"]["limits"], container["name"]

    def test_sidecar_security_context(self, manifest):
        """Non-root 10001, read-only root, no escalation, no capabilities, RuntimeDefault."""
        ctx = sidecar(pod_spec(manifest))["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert ctx["runAsUser"] == 10001
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}

    def test_sidecar_starts_before_and_stops_after_the_app(self, manifest):
        """The sidecar is a native sidecar: the last init container, with restartPolicy Always.

        Init containers before it (the fleet's DSN copy) run to completion before it starts.
        """
        pod = pod_spec(manifest)
        *one_shot, last = pod["initContainers"]
        assert last["name"] == "keybroker"
        assert last["restartPolicy"] == "Always"
        assert all("restartPolicy" not in c for c in one_shot)
        assert cli.entry._parser().parse_args(last["args"]).command == "serve"
        assert app_containers(pod)

    def test_socket_is_shared_through_a_memory_emptydir(self, manifest):
        """The listener's socket sits in a subdirectory of a Memory emptyDir the app mounts too."""
        pod = pod_spec(manifest)
        socket = listener_socket(tomllib.loads(configmap_toml(manifest)))
        kb_mount = mount_for(sidecar(pod), socket)
        assert kb_mount is not None
        assert volume(pod, kb_mount["name"])["emptyDir"]["medium"] == "Memory"
        # the emptyDir itself is world-writable, which the daemon refuses as a socket directory
        assert Path(socket).parent != Path(kb_mount["mountPath"])
        for app in app_containers(pod):
            app_mount = mount_for(app, socket)
            assert app_mount is not None
            assert (app_mount["name"], app_mount["mountPath"]) == (
                kb_mount["name"],
                kb_mount["mountPath"],
            )
            assert env_of(app)["KEYBROKER_SOCKET"]["value"] == socket

    def test_fs_group_is_the_sidecar_group(self, manifest):
        """FsGroup equals the sidecar's group, so every container can open the 0660 socket."""
        pod = pod_spec(manifest)
        assert pod["securityContext"]["fsGroup"] == sidecar(pod)["securityContext"]["runAsGroup"]
        assert pod["securityContext"]["runAsNonRoot"] is True

    def test_probes_run_healthcheck_on_the_socket(self, manifest):
        """Startup, readiness and liveness probes run `keybroker healthcheck --socket` on it."""
        container = sidecar(pod_spec(manifest))
        socket = listener_socket(tomllib.loads(configmap_toml(manifest)))
        for probe in PROBES:
            command = container[probe]["exec"]["command"]
            assert command[0] == "keybroker"
            args = cli.entry._parser().parse_args(command[1:])
            assert (args.command, args.socket) == ("healthcheck", socket), probe
            assert container[probe]["timeoutSeconds"] > args.timeout, probe

    def test_termination_grace_exceeds_server_grace(self, manifest, config_file):
        """TerminationGracePeriodSeconds is above server.grace_seconds."""
        grace = load_config(config_file, env={}).server.grace_seconds
        assert pod_spec(manifest)["terminationGracePeriodSeconds"] > grace

    def test_memory_limit_covers_the_hashing_budget(self, manifest, config_file):
        """The sidecar's memory limit holds the baseline plus hashing.memory_budget_bytes."""
        budget = load_config(config_file, env={}).hashing.memory_budget_bytes
        limit = quantity_bytes(sidecar(pod_spec(manifest))["resources"]["limits"]["memory"])
        assert limit >= BASELINE_BYTES + budget

    def test_config_state_and_audit_live_on_volumes(self, manifest, config_file):
        """The config is the ConfigMap; state and audit directories are emptyDirs (root is RO)."""
        pod = pod_spec(manifest)
        container = sidecar(pod)
        cfg = load_config(config_file, env={})
        config_mount = mount_for(container, config_path(container))
        assert config_mount is not None
        assert config_mount.get("readOnly") is True
        source = volume(pod, config_mount["name"])["configMap"]
        assert source["name"] == only(manifest, "ConfigMap")["metadata"]["name"]
        for path in (str(cfg.server.state_dir), cfg.audit.file):
            mount = mount_for(container, path)
            assert mount is not None, path
            assert "emptyDir" in volume(pod, mount["name"]), path
        assert cfg.audit.stdout is True

    def test_only_the_sidecar_gets_a_service_account_token(self, manifest):
        """The ServiceAccount is used, no token is automounted, the app mounts no token."""
        pod = pod_spec(manifest)
        assert pod["serviceAccountName"] == only(manifest, "ServiceAccount")["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        projected = {v["name"] for v in pod["volumes"] if "projected" in v}
        assert projected
        assert {m["name"] for m in sidecar(pod)["volumeMounts"]} >= projected
        for app in app_containers(pod):
            assert not {m["name"] for m in app["volumeMounts"]} & projected

    def test_config_passes_config_check(self, config_file):
        """`python -m broker config check` accepts the ConfigMap's keybroker.toml."""
        out = subprocess.run(
            [sys.executable, "-m", "broker", "config", "check", str(config_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"{config_file}: ok")

    def test_backend_tables_are_valid(self, config_file):
        """Every [backends.NAME] table maps onto its backend's settings without an error."""
        data = tomllib.loads(config_file.read_text())
        tables = {spec[0]: spec for spec in REMOTE_SCHEMES.values()}
        assert data["backends"]
        for name, raw in data["backends"].items():
            _, module, _, settings = tables[name]
            fields = dict(raw)
            resilience = fields.pop("resilience", {})
            cls = getattr(importlib.import_module(module), settings)
            settings_from(cls, fields, f"backends.{name}")
            settings_from(ResilienceSettings, resilience, f"backends.{name}.resilience")

    @pytest.mark.parametrize(
        ("key", "op", "context", "allowed"),
        [
            ("payments", "encrypt", ["tenant=acme"], True),
            ("payments", "decrypt", ["tenant=acme"], True),
            ("payments", "rewrap", ["tenant=acme"], True),
            ("payments", "encrypt", [], False),
            ("payments", "admin", ["tenant=acme"], False),
            ("payments", "datakey", ["tenant=acme"], False),
            ("other", "encrypt", ["tenant=acme"], False),
        ],
    )
    def test_policy_allows_only_its_keys_and_operations(
        self, config_file, key, op, context, allowed
    ):
        """payments-app may encrypt/decrypt/rewrap `payments` with a tenant, and nothing else."""
        flags = [f"--context={c}" for c in context]
        out = subprocess.run(
            [
                *(sys.executable, "-m", "broker", "policy", "explain"),
                *("--policy", str(config_file), "--caller", "payments-app"),
                *("--key", key, "--op", op, *flags),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == (0 if allowed else 1), out.stdout + out.stderr


class TestAwsIrsa:
    """keybroker-sidecar.yaml: AWS KMS credentials through IRSA."""

    def test_irsa_environment_and_token(self):
        """The sidecar has the IRSA variables and an STS-audience token where they point."""
        docs = yaml_documents(SIDECAR_YAML)
        pod = pod_spec(docs)
        env = env_of(sidecar(pod))
        role = env["AWS_ROLE_ARN"]["value"]
        annotations = only(docs, "ServiceAccount")["metadata"]["annotations"]
        assert annotations["eks.amazonaws.com/role-arn"] == role
        token_file = env["AWS_WEB_IDENTITY_TOKEN_FILE"]["value"]
        mount = mount_for(sidecar(pod), token_file)
        assert mount is not None
        source = volume(pod, mount["name"])["projected"]["sources"][0]["serviceAccountToken"]
        assert source["audience"] == "sts.amazonaws.com"
        assert Path(token_file).name == source["path"]
        key_uri = tomllib.loads(configmap_toml(docs))["keys"]["payments"]["uri"]
        assert key_uri.startswith("aws-kms://arn:aws:kms:")


class TestVaultKubernetesAuth:
    """keybroker-vault.yaml: Vault Transit with the Kubernetes auth method."""

    def test_kubernetes_auth_reads_a_projected_token(self):
        """Auth = "kubernetes", and kubernetes_jwt_path is a projected token with audience vault."""
        docs = yaml_documents(VAULT_YAML)
        pod = pod_spec(docs)
        vault = tomllib.loads(configmap_toml(docs))["backends"]["vault"]
        assert vault["auth"] == "kubernetes"
        assert vault["kubernetes_role"]
        mount = mount_for(sidecar(pod), vault["kubernetes_jwt_path"])
        assert mount is not None
        source = volume(pod, mount["name"])["projected"]["sources"][0]["serviceAccountToken"]
        assert source["audience"] == "vault"
        assert Path(vault["kubernetes_jwt_path"]).name == source["path"]
        key_uri = tomllib.loads(configmap_toml(docs))["keys"]["payments"]["uri"]
        assert key_uri.startswith("vault-transit://")


# ----------------------------------------------------------------------------- the pod, live


class VaultStandIn:
    """keybroker-vault.yaml's Vault: OpenBao, logged in with a service-account JWT it reviews."""

    def __init__(self, bao: OpenBaoServer, api: TokenReviewApi) -> None:
        """Use this OpenBao and this stand-in for the Kubernetes TokenReview API."""
        self.bao, self.api = bao, api

    def prepare(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        """Make the transit key, the policy and the role; project the JWT; the extra env."""
        del container
        vault = pod.config["backends"]["vault"]
        mount, _, name = pod.config["keys"]["payments"]["uri"].split("://")[1].rpartition("/")
        self.bao.create_key(name, mount=mount)
        self.bao.write_policy("keybroker-transit", transit_policy(mount, admin=False))
        self.bao.enable_kubernetes_auth(
            self.api, vault["kubernetes_role"], policies=["keybroker-transit"]
        )
        account = only(pod.docs, "ServiceAccount")["metadata"]["name"]
        jwt = self.api.service_account_jwt("default", account)
        Path(pod.host(vault["kubernetes_jwt_path"])).write_text(jwt)
        return {"ECL_CRYPTO_VAULT_ADDR": self.bao.url}  # the in-cluster address is OpenBao's


def _start_pod(base: Path, manifest: Path, stand_in: IrsaKms | VaultStandIn, user: Account) -> Pod:
    """The manifest's pod with its sidecar serving; the root-key Secret made up here."""
    docs = yaml_documents(manifest)
    pod = simulate(docs, pod_spec(docs), base)
    container = sidecar(pod.spec)
    pod.secret_env["ECL_CRYPTO_LOCAL_MASTER_KEY"] = secrets.token_hex(32)
    localize_config(pod, container)
    extra_env = stand_in.prepare(pod, container)
    return start_sidecar(pod, user, extra_env, base)


@pytest.fixture(scope="class", params=["aws", "vault"])
def pod(request, class_base: Path, image_user: Account) -> Iterator[Pod]:
    """The sidecar of one manifest, running as in its pod, its KMS stood in for."""
    with contextlib.ExitStack() as stack:
        if request.param == "aws":
            stand_in: IrsaKms | VaultStandIn = IrsaKms(request.getfixturevalue("moto"))
            manifest = SIDECAR_YAML
        else:
            bao = stack.enter_context(OpenBaoServer())
            stand_in = VaultStandIn(bao, stack.enter_context(TokenReviewApi()))
            manifest = VAULT_YAML
        running = _start_pod(class_base / request.param, manifest, stand_in, image_user)
        try:
            yield running
        finally:
            running.sidecar.kill()


class TestSidecarPod:
    """Each manifest's sidecar, run as its pod would run it."""

    def test_probes_pass_as_the_container_user(self, pod, image_user):
        """Each probe's exec command, run as uid 10001, exits 0 and prints SERVING."""
        container = sidecar(pod.pod)
        for probe in PROBES:
            argv = list(container[probe]["exec"]["command"])
            argv[0] = str(KEYBROKER)
            argv[-1] = pod.host(argv[-1])
            out = run_confined(Confinement(image_user.name), argv)
            assert (out.returncode, out.stdout.strip()) == (0, b"SERVING"), out.stderr

    def test_app_encrypts_and_decrypts(self, pod, app_user):
        """The app's encrypt | decrypt pipeline works (KMS reached with the pod's credentials)."""
        sealed = app_cli(
            pod, app_user, ["encrypt", "--key", "payments", "--context", "tenant=acme"], b"hello"
        )
        assert sealed.returncode == 0, sealed.stderr
        opened = app_cli(pod, app_user, ["decrypt", "--context", "tenant=acme"], sealed.stdout)
        assert opened.stdout == b"hello"

    @pytest.mark.parametrize(
        "argv",
        [
            ["encrypt", "--key", "payments"],
            ["encrypt", "--key", "other", "--context", "tenant=acme"],
        ],
        ids=["no-tenant", "other-key"],
    )
    def test_policy_refuses_what_it_does_not_allow(self, pod, app_user, argv):
        """Without a tenant, or with another key, the app gets `permission denied`."""
        out = app_cli(pod, app_user, argv, b"x")
        assert out.returncode == 1
        assert "permission denied" in out.stderr.decode()

    def test_process_outside_the_pod_group_cannot_connect(self, pod, outsider):
        """Without the fsGroup, the socket directory cannot even be entered."""
        out = app_cli(
            pod, outsider, ["encrypt", "--key", "payments", "--context", "tenant=acme"], b"x"
        )
        assert out.returncode == 1
        assert "cannot reach the daemon" in out.stderr.decode()

    def test_socket_directory_is_the_daemons(self, pod, image_user):
        """The daemon made the socket's directory 0750, group fsGroup, inside the emptyDir."""
        info = Path(pod.socket).parent.stat()
        fs_group = pod.pod["securityContext"]["fsGroup"]
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (
            0o750,
            image_user.uid,
            fs_group,
        )

    def test_audit_goes_to_the_volume_and_stdout(self, pod):
        """Audit records are in the audit volume's file and on stdout; the chain verifies."""
        audit = Path(pod.host(pod.config["audit"]["file"]))
        lines = audit.read_text().splitlines()
        assert any(json.loads(line).get("caller") == "listener:payments-app" for line in lines)
        stdout = set(pod.sidecar.stdout().splitlines())
        assert set(lines) <= stdout
        out = subprocess.run(
            [sys.executable, "-m", "broker", "audit", "verify", str(audit)],
            env={
                "ECL_CRYPTO_LOCAL_MASTER_KEY": pod.secret_env["ECL_CRYPTO_LOCAL_MASTER_KEY"],
                "PATH": "/usr/bin:/bin",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr

    def test_peak_memory_fits_the_limit_with_the_hashing_budget(self, pod):
        """Peak RSS so far plus hashing.memory_budget_bytes stays under the memory limit."""
        limit = quantity_bytes(sidecar(pod.pod)["resources"]["limits"]["memory"])
        budget = pod.config["hashing"]["memory_budget_bytes"]
        assert pod.sidecar.peak_rss_bytes() + budget <= limit
        assert pod.sidecar.peak_rss_bytes() <= BASELINE_BYTES

    def test_stops_within_the_termination_grace_period(self, pod):
        """SIGTERM ends the sidecar with 0 well within terminationGracePeriodSeconds."""
        code, took = pod.sidecar.stop(timeout=pod.pod["terminationGracePeriodSeconds"])
        assert code == 0
        assert took < pod.pod["terminationGracePeriodSeconds"]
        assert not Path(pod.socket).exists()


class TestEmptyDirSocket:
    """Why the socket goes in a subdirectory of the emptyDir."""

    def test_socket_directly_in_an_emptydir_is_refused(self, base, image_user):
        """An emptyDir is world-writable, so the daemon refuses it as a socket directory."""
        vol = empty_dir(base / "vol", 10001, memory=True)
        state = empty_dir(base / "state", 10001, memory=True)
        config = base / "keybroker.toml"
        config.write_text(
            f'[server]\nstate_dir = "{state}"\n[keys.default]\nuri = "local://default"\n'
            f'[[listeners]]\nkind = "unix"\npath = "{vol}/keybroker.sock"\nidentity = "app"\n'
        )
        config.chmod(0o644)
        confinement = Confinement(image_user.name, writable=[vol, state])
        daemon = ConfinedDaemon(
            confinement, [str(KEYBROKER), "serve", "--config", str(config)], {}, base
        )
        assert daemon.run_to_exit() == 2
        assert "writable by other users" in daemon.stderr()
