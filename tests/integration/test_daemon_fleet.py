"""A fleet: daemons sharing one PostgreSQL key store see the same keys, and survive its outages.

Each test gets a fresh database on the session's throwaway PostgreSQL server; the daemons run
in dev mode (keys `default`, `signing`, `hmac`) with `[keystore] kind = "postgres"` and one
shared development root key, as sidecars of one Deployment would. TestKmsWrappedRoot instead
lets AWS KMS (moto_server) wrap the root key, which the first daemon keeps in the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from integration.kms.servers import start_moto
from support.daemon import Daemon, daemon_env
from support.rpc import assert_fails

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import hashing_pb2, hashing_pb2_grpc, signing_pb2, signing_pb2_grpc
from broker.rpc.gen import key_admin_pb2 as admin_pb
from broker.rpc.gen import key_admin_pb2_grpc as admin_pb_grpc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from integration.kms.servers import MotoServer
    from support.postgres import PgDatabase

ROOT_HEX = "5f" * 32
PROPAGATION_SECONDS = 2.0
CONFIG = """
[keystore]
kind = "postgres"
dsn_file = "{dsn_file}"
connect_timeout = 2
poll_seconds = 0.5
"""
KMS_ROOT = """
[keys.default]
uri = "local://default"

[keyring]
master_key_uri = "{uri}"

[backends.aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
access_key_id = "testing"
secret_access_key = "testing"
"""


def kb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the keybroker command line."""
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "ECL_CRYPTO_LOCAL_MASTER_KEY": ROOT_HEX, **(env or {})},
    )


def fleet_config(tmp_path: Path, dsn: str, name: str = "fleet.toml") -> Path:
    """A config file naming the database through a 0600 DSN file."""
    dsn_file = tmp_path / f"{name}.dsn"
    dsn_file.write_text(dsn + "\n")
    dsn_file.chmod(0o600)
    config = tmp_path / name
    config.write_text(CONFIG.format(dsn_file=dsn_file))
    return config


@pytest.fixture
def config(tmp_path: Path, pg_database: PgDatabase) -> Path:
    """The fleet's config, with the schema initialised by `keybroker keystore init`."""
    path = fleet_config(tmp_path, pg_database.dsn)
    out = kb("keystore", "init", "--config", str(path))
    assert out.returncode == 0, out.stderr
    assert "schema version" in out.stderr
    return path


@pytest.fixture
def fleet(tmp_path: Path, config: Path) -> Iterator[Callable[[str], Daemon]]:
    """Start daemons (each with its own state dir) on the one database; all stopped at the end."""
    started: list[Daemon] = []

    def start(name: str) -> Daemon:
        env = {"ECL_CRYPTO_LOCAL_MASTER_KEY": ROOT_HEX}
        d = Daemon(tmp_path / name, env, config=config).start()
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            try:
                d.stop()
            finally:
                d.kill()


def eventually(check: Callable[[], bool], seconds: float = PROPAGATION_SECONDS) -> float:
    """Wait until check() holds; the seconds it took (fails the test past the limit)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _current(d: Daemon, key: str = "default") -> int:
    return d.admin.DescribeKey(admin_pb.DescribeKeyRequest(key=key)).key.current_version


def _encrypt(d: Daemon, text: bytes) -> pb.EncryptResponse:
    return d.envelope.Encrypt(pb.EncryptRequest(key="default", plaintext=text))


def _decrypt(d: Daemon, ciphertext: bytes) -> bytes:
    return d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ciphertext)).plaintext


def _keystore_health(d: Daemon) -> int:
    stub = health_pb2_grpc.HealthStub(d.channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service="keybroker.keystore"), timeout=2)
    return int(reply.status)


def _waiting_for_locks(db: PgDatabase) -> int:
    """How many sessions on the database wait for a lock (the rotations queued on the row)."""
    with db.server.admin(db.name) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (db.name,),
        ).fetchone()
    return int(row[0]) if row else 0


class TestSharedKeys:
    """Every daemon on the database serves the same keys and versions."""

    def test_keys_versions_and_material_are_shared(self, fleet):
        """A's envelopes open on B, HMACs match, A's signatures verify on B, rotation spreads."""
        a, b = fleet("a"), fleet("b")
        sealed = _encrypt(a, b"card 4111")
        assert _decrypt(b, sealed.ciphertext) == b"card 4111"
        macs = [
            hashing_pb2_grpc.HashingServiceStub(d.channel)
            .ComputeHmac(hashing_pb2.ComputeHmacRequest(key="hmac", data=b"alice@example.com"))
            .mac
            for d in (a, b)
        ]
        assert macs[0] == macs[1]
        signature = signing_pb2_grpc.SigningServiceStub(a.channel).Sign(
            signing_pb2.SignRequest(key="signing", data=b"release 1.0")
        )
        signing_pb2_grpc.SigningServiceStub(b.channel).Verify(
            signing_pb2.VerifyRequest(
                key="signing", data=b"release 1.0", signature=signature.signature
            )
        )
        rotated = a.admin.RotateKey(admin_pb.RotateKeyRequest(key="default")).key
        assert rotated.current_version == 2
        eventually(lambda: _current(b) == 2)
        under_v2 = _encrypt(b, b"after rotation")
        assert under_v2.key_version == 2
        assert _decrypt(a, under_v2.ciphertext) == b"after rotation"
        assert _decrypt(b, sealed.ciphertext) == b"card 4111"

    def test_a_version_disabled_on_a_is_refused_on_b(self, fleet):
        """B refuses v1 within 2 s of A disabling it, though B had that DEK cached."""
        a, b = fleet("a"), fleet("b")
        old = _encrypt(b, b"under v1").ciphertext
        assert _decrypt(b, old) == b"under v1"  # B now holds the DEK in its decrypt cache
        a.admin.RotateKey(admin_pb.RotateKeyRequest(key="default"))
        state = admin_pb.KEY_VERSION_STATE_DISABLED
        a.admin.UpdateKeyVersion(
            admin_pb.UpdateKeyVersionRequest(key="default", version=1, state=state)
        )

        def refused() -> bool:
            try:
                _decrypt(b, old)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False

        eventually(refused)

    def test_concurrent_rotations_make_one_version(self, fleet, pg_database):
        """A and B rotating from the same version at once produce exactly one new version.

        The test holds the key's row lock until both rotations wait for it, so both are
        certainly in flight from version 1 together; then it lets them go.
        """
        daemons = fleet("a"), fleet("b")
        channels = [grpc.insecure_channel(f"unix:{d.socket}") for d in daemons]
        try:
            stubs = [admin_pb_grpc.KeyAdminServiceStub(c) for c in channels]
            with pg_database.server.admin(pg_database.name) as conn, conn.transaction():
                conn.execute("SELECT 1 FROM keybroker_keys WHERE name = 'default' FOR UPDATE")
                request = admin_pb.RotateKeyRequest(key="default")
                futures = [stub.RotateKey.future(request, timeout=30) for stub in stubs]
                eventually(lambda: _waiting_for_locks(pg_database) == 2, 4)
            versions = {f.result().key.current_version for f in futures}
        finally:
            for c in channels:
                c.close()
        assert versions == {2}
        described = daemons[0].admin.DescribeKey(admin_pb.DescribeKeyRequest(key="default")).key
        assert [v.version for v in described.versions] == [1, 2]


class TestOutage:
    """The database goes away: serve from the last known keys, refuse changes, recover."""

    def test_serves_reads_refuses_changes_and_recovers(self, fleet, pg_database):
        """While PostgreSQL is down encrypt and decrypt work and rotate is UNAVAILABLE, fast."""
        a = fleet("a")
        before = _encrypt(a, b"before the outage").ciphertext
        pg_database.server.stop("immediate")
        start = time.monotonic()
        exc = assert_fails(
            a.admin.RotateKey,
            admin_pb.RotateKeyRequest(key="default"),
            grpc.StatusCode.UNAVAILABLE,
            "KEYSTORE_UNAVAILABLE",
            "no change was made",
        )
        assert time.monotonic() - start < 8, "changes fail fast while the store is down"
        assert "password" not in (exc.details() or "")
        assert _decrypt(a, before) == b"before the outage"
        assert _decrypt(a, _encrypt(a, b"during").ciphertext) == b"during"
        eventually(lambda: _keystore_health(a) == health_pb2.HealthCheckResponse.NOT_SERVING, 10)
        assert a.metric("keybroker_keystore_up", kind="postgres") == 0
        assert _current(a) == 1
        pg_database.server.start()
        eventually(lambda: _keystore_health(a) == health_pb2.HealthCheckResponse.SERVING, 15)
        assert a.admin.RotateKey(admin_pb.RotateKeyRequest(key="default")).key.current_version == 2
        assert a.metric("keybroker_keystore_up", kind="postgres") == 1

    def test_killed_mid_rotation_changes_nothing_or_everything(self, fleet, pg_database):
        """Rotations racing a crash of the database leave versions that every envelope opens."""
        a = fleet("a")
        envelopes = {b"v1": _encrypt(a, b"v1").ciphertext}
        acknowledged, refused = [], []
        with grpc.insecure_channel(f"unix:{a.socket}") as channel:
            stub = admin_pb_grpc.KeyAdminServiceStub(channel)
            request = admin_pb.RotateKeyRequest(key="default")
            futures = [stub.RotateKey.future(request, timeout=30) for _ in range(5)]
            pg_database.server.crash()
            for f in futures:
                try:
                    acknowledged.append(f.result().key.current_version)
                except grpc.RpcError as exc:
                    refused.append(exc.code())
        assert set(refused) <= {grpc.StatusCode.UNAVAILABLE}, refused
        pg_database.server.start()
        eventually(lambda: _keystore_health(a) == health_pb2.HealthCheckResponse.SERVING, 15)
        sealed = _encrypt(a, b"after")
        envelopes[b"after"] = sealed.ciphertext
        assert sealed.key_version >= max(acknowledged, default=1)
        b = fleet("b")
        for plaintext, ciphertext in envelopes.items():
            assert _decrypt(b, ciphertext) == plaintext
        versions = [
            v.version
            for v in b.admin.DescribeKey(admin_pb.DescribeKeyRequest(key="default")).key.versions
        ]
        assert versions == list(range(1, len(versions) + 1))


class TestStart:
    """What refuses to start, in one line, exit 2."""

    def test_unreachable_database(self, tmp_path, postgres):
        """A DSN nobody answers: one line naming host:port/db, never the password, exit 2."""
        dsn = postgres.dsn("nowhere").replace(f"port={postgres.port}", "port=1")
        config = fleet_config(tmp_path, dsn)
        out = kb("serve", "--dev", "--state-dir", str(tmp_path / "s"), "--config", str(config))
        assert out.returncode == 2, out.stderr
        line = out.stderr.strip().splitlines()[-1]
        assert line.startswith("keybroker: ")
        assert "127.0.0.1:1/nowhere" in line
        assert postgres.password not in out.stderr

    def test_wrong_root_key(self, tmp_path, fleet):
        """A daemon holding another root key refuses to start and serves nothing."""
        fleet("a")
        other = kb(
            "serve",
            "--dev",
            "--state-dir",
            str(tmp_path / "other"),
            "--config",
            str(tmp_path / "fleet.toml"),
            env={"ECL_CRYPTO_LOCAL_MASTER_KEY": "6a" * 32},
        )
        assert other.returncode == 2
        line = other.stderr.strip().splitlines()[-1]
        assert line.endswith(
            "the configured root key is not the one this key store was created with"
        )

    def test_newer_schema_refused(self, tmp_path, pg_database, config):
        """A store a newer release migrated: refused, naming both schema versions."""
        with pg_database.server.admin(pg_database.name) as conn:
            conn.execute("UPDATE keybroker_schema_version SET version = version + 100")
        out = kb("serve", "--dev", "--state-dir", str(tmp_path / "s"), "--config", str(config))
        assert out.returncode == 2
        assert "upgrade keybroker" in out.stderr

    def test_without_a_shared_root_key(self, tmp_path, config):
        """No master_key_uri and no ECL_CRYPTO_LOCAL_MASTER_KEY: the fix is named."""
        env = {k: v for k, v in os.environ.items() if k != "ECL_CRYPTO_LOCAL_MASTER_KEY"}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "broker",
                "serve",
                "--dev",
                "--state-dir",
                str(tmp_path / "s"),
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert out.returncode == 2
        assert "master_key_uri" in out.stderr


class TestCopy:
    """`keybroker keystore copy` moves a file store into PostgreSQL and back."""

    def test_file_to_postgres_keeps_every_envelope_signature_and_mac(self, tmp_path, config):
        """What a file-store daemon made verifies on a postgres-store daemon after the copy."""
        state = tmp_path / "single"
        env = {"ECL_CRYPTO_LOCAL_MASTER_KEY": ROOT_HEX}
        single = Daemon(state, env).start()
        try:
            single.admin.RotateKey(admin_pb.RotateKeyRequest(key="default"))
            sealed = _encrypt(single, b"moved")
            mac = (
                hashing_pb2_grpc.HashingServiceStub(single.channel)
                .ComputeHmac(hashing_pb2.ComputeHmacRequest(key="hmac", data=b"bob"))
                .mac
            )
            signature = (
                signing_pb2_grpc.SigningServiceStub(single.channel)
                .Sign(signing_pb2.SignRequest(key="signing", data=b"doc"))
                .signature
            )
        finally:
            single.stop()
        copy_config = tmp_path / "copy.toml"
        copy_config.write_text(
            f'[server]\nstate_dir = "{state}"\n'
            + config.read_text()
            + '[keys.default]\nuri = "local://default"\n'
        )
        out = kb(
            "keystore", "copy", "--from", "file", "--to", "postgres", "--config", str(copy_config)
        )
        assert out.returncode == 0, out.stderr
        assert "3 of 3 keys copied" in out.stderr
        again = kb(
            "keystore", "copy", "--from", "file", "--to", "postgres", "--config", str(copy_config)
        )
        assert again.returncode == 0, again.stderr
        assert "0 of 3 keys copied" in again.stderr
        d = Daemon(tmp_path / "fleet", env, config=config).start()
        try:
            assert _decrypt(d, sealed.ciphertext) == b"moved"
            assert _current(d) == 2
            assert (
                hashing_pb2_grpc.HashingServiceStub(d.channel)
                .ComputeHmac(hashing_pb2.ComputeHmacRequest(key="hmac", data=b"bob"))
                .mac
                == mac
            )
            signing_pb2_grpc.SigningServiceStub(d.channel).Verify(
                signing_pb2.VerifyRequest(key="signing", data=b"doc", signature=signature)
            )
        finally:
            d.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto_server: the AWS KMS whose key wraps the fleet's root key."""
    with start_moto() as server:
        yield server


def kb_without_root(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the keybroker command line with no root key (or other keybroker setting) in the env."""
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=daemon_env(),
    )


def _stored_meta(db: PgDatabase) -> dict[str, str]:
    """The store-wide values the database keeps (root check value, wrapped root key)."""
    with db.server.admin(db.name) as conn:
        rows = conn.execute("SELECT name, value FROM keybroker_meta").fetchall()
    return {str(name): str(value) for name, value in rows}


class TestKmsWrappedRoot:
    """The root key is made by AWS KMS, kept in the database wrapped, unwrapped by every daemon."""

    @pytest.fixture
    def kms_config(self, tmp_path: Path, pg_database: PgDatabase, moto: MotoServer) -> Path:
        """A fleet config naming a fresh KMS key as master_key_uri; the schema initialised."""
        path = fleet_config(tmp_path, pg_database.dsn, "kms.toml")
        uri = f"aws-kms://{moto.create_key()}"
        path.write_text(path.read_text() + KMS_ROOT.format(uri=uri, endpoint=moto.url))
        path.chmod(0o600)  # it holds the (dummy) AWS secret access key
        out = kb_without_root("keystore", "init", "--config", str(path))
        assert out.returncode == 0, out.stderr
        return path

    def test_audit_verifies_and_a_second_daemon_opens_the_envelopes(
        self, tmp_path, kms_config, pg_database
    ):
        """Verify unwraps the stored root through KMS; another daemon decrypts the first's work."""
        first = Daemon(tmp_path / "a", config=kms_config).start()
        try:
            sealed = _encrypt(first, b"under a wrapped root").ciphertext
            assert first.admin.RotateKey(admin_pb.RotateKeyRequest(key="default")).key
        finally:
            first.stop()
        audit = tmp_path / "a" / "audit.log"
        records = len(audit.read_text().splitlines())
        out = kb_without_root("audit", "verify", "--config", str(kms_config), str(audit))
        assert out.returncode == 0, out.stdout + out.stderr
        verdict = out.stdout.splitlines()[-1]
        assert verdict.startswith(f"ok: {records} records, seq 0..{records - 1}, head mac ")
        second = Daemon(tmp_path / "b", config=kms_config).start()
        try:
            assert _decrypt(second, sealed) == b"under a wrapped root"
            assert _current(second) == 2
        finally:
            second.stop()
        root = json.loads(_stored_meta(pg_database)["root_key"])
        assert root["uri"] in kms_config.read_text()
        for state in (tmp_path / "a", tmp_path / "b"):
            assert not (state / "master.key").exists()
            assert not (state / "master.key.wrapped").exists()

    def test_verify_never_creates_the_root(self, tmp_path, kms_config, pg_database):
        """Before any daemon ran, verify fails in one line and the store still holds no root."""
        audit = tmp_path / "audit.log"
        audit.write_text("")
        out = kb_without_root("audit", "verify", "--config", str(kms_config), str(audit))
        assert out.returncode == 2
        where = f"127.0.0.1:{pg_database.server.port}/{pg_database.name}"
        assert out.stderr.splitlines() == [
            f"keybroker: {where}: the store holds no root key yet; start a daemon first"
        ]
        assert _stored_meta(pg_database) == {}
