"""deploy/kubernetes/keybroker-fleet.yaml: replicas sharing one PostgreSQL key store, for real.

The checks every manifest gets are in test_kubernetes.py; these are the fleet's own. The pods
are simulated as there (pods.py), against a throwaway PostgreSQL (tests/support/postgres.py)
that accepts only TLS connections, with a server certificate from a test CA. Its roles and
grants are made by the SQL of docs/keystore.md, "Setting up PostgreSQL". The KMS that wraps
the root key is moto's, reached with the IRSA variables through moto's STS, as for
keybroker-sidecar.yaml. The schema Job runs first with `init` (a new database, as the
manifest's header says), then as shipped with `migrate`; then two replicas start.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import psycopg
import pytest
from deploy.manifests import (
    FLEET_YAML,
    app_containers,
    configmap_toml,
    env_of,
    job_spec,
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
    env_of_container,
    localize_config,
    run_container,
    simulate,
    start_sidecar,
)
from deploy.sandbox import KEYBROKER, Confinement, run_confined
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from support import certs
from support.daemon import free_port
from support.postgres import PostgresServer

from broker import cli

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

    from deploy.sandbox import Account

KEYSTORE_DOC = Path(__file__).resolve().parents[2] / "docs" / "keystore.md"
DATABASE = "keybroker"
OWNER = "keybroker_owner"
DAEMON = "keybroker"
DSN_CONTAINER = "keystore-dsn"
REPLICAS = ("a", "b")
BASELINE_BYTES = 128 << 20  # as test_kubernetes.py: everything but password hashing


def _docs() -> list[dict[str, Any]]:
    return yaml_documents(FLEET_YAML)


def _config() -> dict[str, Any]:
    return tomllib.loads(configmap_toml(_docs()))


def _secret_volume(spec: dict[str, Any]) -> str:
    """The name of the pod's one Secret volume."""
    (name,) = [v["name"] for v in spec["volumes"] if "secret" in v]
    return name


class TestFleetManifest:
    """What the fleet manifest promises, read as kubectl reads it."""

    def test_replicas_share_local_keys_under_a_kms_wrapped_root(self):
        """Several replicas, local keys in PostgreSQL, the root wrapped by AWS KMS, no Secret."""
        docs = _docs()
        config = _config()
        assert only(docs, "Deployment")["spec"]["replicas"] >= len(REPLICAS)
        assert config["keystore"]["kind"] == "postgres"
        assert config["keyring"]["master_key_uri"].startswith("aws-kms://arn:aws:kms:")
        assert all(k["uri"].startswith("local://") for k in config["keys"].values())
        assert "dsn" not in config["keystore"]
        for spec in (pod_spec(docs), job_spec(docs)):
            for container in [*spec["initContainers"], *spec["containers"]]:
                assert "ECL_CRYPTO_LOCAL_MASTER_KEY" not in env_of(container)

    @pytest.mark.parametrize("kind", ["Deployment", "Job"])
    def test_dsn_secret_reaches_the_daemon_only_as_a_private_copy(self, kind):
        """An init container copies the Secret (0600) to a Memory emptyDir only the daemon reads."""
        docs = _docs()
        spec = pod_spec(docs) if kind == "Deployment" else job_spec(docs)
        dsn_file = _config()["keystore"]["dsn_file"]
        copier = next(c for c in spec["initContainers"] if c["name"] == DSN_CONTAINER)
        program, mode_flag, mode, source, target = copier["command"]
        assert (program, mode_flag, mode, target) == ("install", "-m", "0600", dsn_file)
        secret_mount = mount_for(copier, source)
        assert secret_mount is not None
        assert secret_mount["name"] == _secret_volume(spec)
        assert secret_mount.get("readOnly") is True
        copy_mount = mount_for(copier, dsn_file)
        assert copy_mount is not None
        assert volume(spec, copy_mount["name"])["emptyDir"]["medium"] == "Memory"
        apps = app_containers(spec) if kind == "Deployment" else []
        for container in [*spec["initContainers"], *spec["containers"]]:
            names = {m["name"] for m in container.get("volumeMounts", [])}
            if container is not copier:
                assert secret_mount["name"] not in names, container["name"]
            if container in apps:
                assert copy_mount["name"] not in names, container["name"]
        assert spec["initContainers"].index(copier) == 0

    def test_daemons_and_schema_job_use_different_database_roles(self):
        """The Job's Secret (the schema owner's DSN) is not the daemons' Secret."""
        docs = _docs()
        secrets = {
            volume(spec, _secret_volume(spec))["secret"]["secretName"]
            for spec in (pod_spec(docs), job_spec(docs))
        }
        assert len(secrets) == 2

    def test_schema_job_runs_migrate_with_the_fleet_config(self):
        """The Job runs `keystore migrate` on the Deployment's ConfigMap, with no token at all."""
        docs = _docs()
        spec = job_spec(docs)
        (container,) = spec["containers"]
        args = cli.entry._parser().parse_args(container["args"])
        assert (args.command, args.keystore_command) == ("keystore", "migrate")
        mount = mount_for(container, str(args.config))
        assert mount is not None
        config_map = volume(spec, mount["name"])["configMap"]["name"]
        assert config_map == only(docs, "ConfigMap")["metadata"]["name"]
        assert str(args.config) == config_path(sidecar(pod_spec(docs)))
        assert spec["automountServiceAccountToken"] is False
        assert spec["restartPolicy"] == "Never"
        assert not [v for v in spec["volumes"] if "projected" in v]

    @pytest.mark.parametrize("kind", ["Deployment", "Job"])
    def test_tls_verifies_the_database(self, kind):
        """Sslmode verify-full, with the CA from a ConfigMap mounted where the config says."""
        docs = _docs()
        spec = pod_spec(docs) if kind == "Deployment" else job_spec(docs)
        keystore = _config()["keystore"]
        assert keystore["sslmode"] == "verify-full"
        reader = sidecar(spec) if kind == "Deployment" else spec["containers"][0]
        mount = mount_for(reader, keystore["sslrootcert"])
        assert mount is not None
        assert "configMap" in volume(spec, mount["name"])


# ----------------------------------------------------------------------------- live


def documented_sql() -> list[list[str]]:
    """The statements of each SQL block of docs/keystore.md, "Setting up PostgreSQL"."""
    section = KEYSTORE_DOC.read_text().split("## Setting up PostgreSQL", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    statements = []
    for block in blocks:
        text = re.sub(r"--[^\n]*", "", block)
        statements.append([s.strip() for s in text.split(";") if s.strip()])
    return statements


@dataclass
class FleetDatabase:
    """The fleet's PostgreSQL: TLS only, roles and grants as docs/keystore.md makes them."""

    server: PostgresServer
    ca_pem: str
    passwords: dict[str, str]

    def dsn(self, role: str) -> str:
        """The DSN a Secret would hold for a role (TLS settings come from the config)."""
        return (
            f"host=127.0.0.1 port={self.server.port} dbname={DATABASE} user={role} "
            f"password={self.passwords[role]}"
        )

    def connect(self, role: str) -> psycopg.Connection[Any]:
        """A connection as a role, verifying the server as the daemons do."""
        ca = self.server.root / "client-ca.crt"
        return psycopg.connect(
            self.dsn(role), sslmode="verify-full", sslrootcert=str(ca), autocommit=True
        )


def _tls_only(server: PostgresServer, authority: certs.Issued) -> None:
    """A server certificate for 127.0.0.1, ssl on, and TCP logins over TLS only."""
    cert, key = server.root / "server.crt", server.root / "server.key"
    certs.server(authority).write(cert, key)
    (server.root / "client-ca.crt").write_bytes(authority.cert)
    if server.account is not None:
        for path in (cert, key):
            os.chown(path, server.account.pw_uid, server.account.pw_gid)
    with (server.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
    hba = server.data / "pg_hba.conf"
    hba.write_text(re.sub(r"^host(\s)", r"hostssl\1", hba.read_text(), flags=re.MULTILINE))


def _documented_roles(server: PostgresServer) -> dict[str, str]:
    """Run the documented SQL (each statement apart, as psql sends them); set passwords."""
    on_server, on_database = documented_sql()
    with server.admin() as conn:
        for statement in on_server:
            conn.execute(statement)
    with server.admin(DATABASE) as conn:
        for statement in on_database:
            conn.execute(statement)
    passwords = {role: secrets.token_urlsafe(18) for role in (OWNER, DAEMON)}
    with server.admin() as conn:
        for role, password in passwords.items():
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
    return passwords


@pytest.fixture(scope="module")
def database() -> Iterator[FleetDatabase]:
    """A PostgreSQL server for the fleet, stopped and deleted at the end."""
    server = PostgresServer.create()
    try:
        authority = certs.ca("keystore-ca")
        _tls_only(server, authority)
        server.start()
        passwords = _documented_roles(server)
        yield FleetDatabase(server, authority.cert.decode(), passwords)
    finally:
        server.destroy()


def _provided(db: FleetDatabase, spec: dict[str, Any], role: str) -> dict[str, dict[str, str]]:
    """What the operator creates: the DSN Secret of the role, the CA ConfigMap."""
    own = only(_docs(), "ConfigMap")["metadata"]["name"]
    (ca_volume,) = [
        v["name"] for v in spec["volumes"] if "configMap" in v and v["configMap"]["name"] != own
    ]
    return {_secret_volume(spec): {"dsn": db.dsn(role) + "\n"}, ca_volume: {"ca.crt": db.ca_pem}}


def run_schema_job(
    db: FleetDatabase, base: Path, user: Account, command: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The Job's pod: the DSN copy, then its container (with `command` in place of migrate)."""
    docs = _docs()
    spec = job_spec(docs)
    pod = simulate(docs, spec, base, _provided(db, spec, OWNER))
    copied = run_container(pod, spec["initContainers"][0], user)
    assert copied.returncode == 0, copied.stderr
    (container,) = spec["containers"]
    if command is not None:
        container = {
            **container,
            "args": [command if a == "migrate" else a for a in container["args"]],
        }
    localize_config(pod, container)
    return run_container(pod, container, user)


def start_replica(db: FleetDatabase, base: Path, user: Account, kms: IrsaKms) -> Pod:
    """One replica's pod: the DSN copied by its init container, then the sidecar serving."""
    docs = _docs()
    spec = pod_spec(docs)
    pod = simulate(docs, spec, base, _provided(db, spec, DAEMON))
    copied = run_container(pod, pod.container(DSN_CONTAINER), user)
    assert copied.returncode == 0, copied.stderr
    container = sidecar(spec)
    localize_config(pod, container)
    # each pod has a network namespace of its own; replicas on one host need their own ports
    metrics = {"KEYBROKER_METRICS_LISTEN": f"127.0.0.1:{free_port()}"}
    return start_sidecar(pod, user, {**kms.prepare(pod, container), **metrics}, base)


@dataclass
class Fleet:
    """The database, the schema Job's runs and the running replicas."""

    db: FleetDatabase
    kms: IrsaKms
    jobs: list[subprocess.CompletedProcess[bytes]]
    pods: list[Pod]


@pytest.fixture(scope="class")
def fleet(database, class_base, image_user, moto) -> Iterator[Fleet]:
    """The schema Job (init, then migrate), then two replicas of the Deployment."""
    kms = IrsaKms(moto)
    jobs = [
        run_schema_job(database, class_base / "init", image_user, "init"),
        run_schema_job(database, class_base / "migrate", image_user),
    ]
    pods: list[Pod] = []
    try:
        # one at a time, each listed before the next starts, so a failed start stops them all
        for name in REPLICAS:
            pods.append(start_replica(database, class_base / name, image_user, kms))  # noqa: PERF401
        yield Fleet(database, kms, jobs, pods)
    finally:
        for pod in pods:
            pod.sidecar.kill()


def _keystore_health(pod: Pod) -> int:
    """The `keybroker.keystore` health of a replica (asked as root, who may connect)."""
    with grpc.insecure_channel(f"unix:{pod.socket}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="keybroker.keystore"), timeout=5
        )
    return int(reply.status)


class TestFleetPods:
    """Two replicas of keybroker-fleet.yaml on one database, run as their pods would run."""

    def test_schema_job_inits_then_migrates_as_the_owner(self, fleet):
        """The Job with `init` makes the schema; as shipped (`migrate`) it finds it current."""
        where = f"127.0.0.1:{fleet.db.server.port}/{DATABASE}"
        for job in fleet.jobs:
            assert job.returncode == 0, job.stderr
            assert f"{where}: key store schema version 1" in job.stderr.decode()
        with fleet.db.server.admin(DATABASE) as conn:
            owners = conn.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE 'keybroker_%'"
            ).fetchall()
        assert owners == [(OWNER,)]

    def test_secret_files_are_refused_as_the_dsn_file(self, fleet, class_base, image_user):
        """The Secret as the kubelet mounts it (0440, group fsGroup) is refused: hence the copy."""
        docs = _docs()
        spec = job_spec(docs)
        pod = simulate(docs, spec, class_base / "direct", _provided(fleet.db, spec, OWNER))
        (container,) = spec["containers"]
        config = localize_config(pod, container)
        secret = pod.volumes[_secret_volume(spec)] / "dsn"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o440
        argv = [str(KEYBROKER), "keystore", "migrate", "--config", str(config)]
        env = {**env_of_container(pod, container), "KEYBROKER_KEYSTORE_DSN_FILE": str(secret)}
        out = run_confined(Confinement(image_user.name), argv, env)
        assert out.returncode == 2
        assert out.stderr.decode().splitlines() == [
            (
                f"keybroker: keystore.dsn_file: {secret}: mode 440 lets other users read it; "
                f"run chmod 600 {secret}"
            )
        ]

    def test_the_dsn_copy_is_private_to_the_daemon(self, fleet, image_user):
        """Each replica's copy is mode 0600, owned by uid 10001."""
        for pod in fleet.pods:
            info = Path(pod.host(pod.config["keystore"]["dsn_file"])).stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, image_user.uid)

    def test_probes_pass_on_every_replica(self, fleet, image_user):
        """Each probe's exec command, run as uid 10001, prints SERVING."""
        for pod in fleet.pods:
            container = sidecar(pod.pod)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                argv = list(container[probe]["exec"]["command"])
                argv[0] = str(KEYBROKER)
                argv[-1] = pod.host(argv[-1])
                out = run_confined(Confinement(image_user.name), argv)
                assert (out.returncode, out.stdout.strip()) == (0, b"SERVING"), out.stderr

    def test_an_envelope_from_one_replica_opens_on_the_other(self, fleet, app_user):
        """The app of replica a encrypts with `payments`; the app of replica b decrypts it."""
        first, second = fleet.pods
        argv = ["encrypt", "--key", "payments", "--context", "tenant=acme"]
        sealed = app_cli(first, app_user, argv, b"shared by the fleet")
        assert sealed.returncode == 0, sealed.stderr
        opened = app_cli(second, app_user, ["decrypt", "--context", "tenant=acme"], sealed.stdout)
        assert (opened.returncode, opened.stdout) == (0, b"shared by the fleet"), opened.stderr

    def test_the_root_key_is_in_the_database_only_wrapped(self, fleet):
        """The stored root names the role's KMS key; no replica keeps a root key file."""
        with fleet.db.server.admin(DATABASE) as conn:
            row = conn.execute(
                "SELECT value FROM keybroker_meta WHERE name = 'root_key'"
            ).fetchone()
        assert row is not None
        role = env_of(sidecar(fleet.pods[0].pod))["AWS_ROLE_ARN"]["value"]
        arn = fleet.kms.key_arn(role, _config()["backends"]["aws"]["region"])
        assert json.loads(row[0])["uri"] == f"aws-kms://{arn}"
        for pod in fleet.pods:
            state = Path(pod.host(pod.config["server"]["state_dir"]))
            assert not [p for p in state.iterdir() if p.name.startswith("master.key")]

    def test_every_connection_is_tls_and_within_the_budget(self, fleet):
        """The daemons' connections all use TLS; each replica holds at most pool_max_size + 1."""
        budget = _config()["keystore"]["pool_max_size"] + 1
        with fleet.db.server.admin() as conn:
            rows = conn.execute(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                "WHERE a.usename = %s AND a.application_name = 'keybroker'",
                (DAEMON,),
            ).fetchall()
        assert 2 * len(fleet.pods) <= len(rows) <= budget * len(fleet.pods)
        assert all(ssl for (ssl,) in rows)

    def test_the_daemons_role_cannot_change_the_schema_or_delete(self, fleet):
        """As the daemons' role: no DDL, no DELETE, no TRUNCATE (docs/keystore.md's grants)."""
        statements = [
            "CREATE TABLE keybroker_extra (x int)",
            "CREATE TEMPORARY TABLE keybroker_scratch (x int)",
            "DELETE FROM keybroker_key_versions",
            "TRUNCATE keybroker_keys",
            "DROP TABLE keybroker_meta",
            "ALTER TABLE keybroker_keys ADD COLUMN x int",
        ]
        with fleet.db.connect(DAEMON) as conn:
            for statement in statements:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)

    def test_keystore_health_and_metrics(self, fleet):
        """Every replica reports `keybroker.keystore` SERVING and keybroker_keystore_up 1."""
        for pod in fleet.pods:
            assert _keystore_health(pod) == health_pb2.HealthCheckResponse.SERVING
            listen = pod.sidecar_env["KEYBROKER_METRICS_LISTEN"]
            with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as page:
                lines = page.read().decode().splitlines()
            assert 'keybroker_keystore_up{kind="postgres"} 1.0' in lines
            assert any(ln.startswith("keybroker_keystore_changes_received_total ") for ln in lines)

    def test_audit_verifies_with_the_config_from_inside_the_sidecar(
        self, fleet, image_user, app_user
    ):
        """`keybroker audit verify --config`, as uid 10001 with the sidecar's env: exit 0."""
        pod = fleet.pods[0]
        argv = ["encrypt", "--key", "payments", "--context", "tenant=acme"]
        assert app_cli(pod, app_user, argv, b"audited").returncode == 0
        container = sidecar(pod.pod)
        audit = pod.host(pod.config["audit"]["file"])
        config = pod.host(config_path(container))
        argv = [str(KEYBROKER), "audit", "verify", "--config", config, audit]
        out = run_confined(Confinement(image_user.name), argv, pod.sidecar_env)
        assert out.returncode == 0, out.stdout + out.stderr
        records = len(Path(audit).read_text().splitlines())
        assert out.stdout.decode().splitlines()[-1].startswith(f"ok: {records} records, seq 0..")

    def test_peak_memory_fits_the_limit_with_the_hashing_budget(self, fleet):
        """With the PostgreSQL driver loaded, peak RSS plus the hashing budget fits the limit."""
        for pod in fleet.pods:
            limit = quantity_bytes(sidecar(pod.pod)["resources"]["limits"]["memory"])
            budget = pod.config["hashing"]["memory_budget_bytes"]
            assert pod.sidecar.peak_rss_bytes() + budget <= limit
            assert pod.sidecar.peak_rss_bytes() <= BASELINE_BYTES

    def test_replicas_stop_within_the_termination_grace_period(self, fleet):
        """SIGTERM ends each sidecar with 0 well within terminationGracePeriodSeconds."""
        for pod in fleet.pods:
            grace = pod.pod["terminationGracePeriodSeconds"]
            code, took = pod.sidecar.stop(timeout=grace)
            assert (code, took < grace) == (0, True)
            assert not Path(pod.socket).exists()
