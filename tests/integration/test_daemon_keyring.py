"""A daemon whose keyring root key is wrapped by AWS KMS (moto_server) or OpenBao transit.

Local signing keys are created under a root key that exists on disk only in wrapped form;
restarts unwrap it and keep signing with the same keys. KMS refusals and mistakes in the
setting stop the start with one line naming the URI. `keybroker audit verify --config` finds
the wrapped root the way the daemon does, and never makes a root key of its own.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from integration.kms.openbao import start_openbao
from integration.kms.servers import start_moto
from support.daemon import Daemon, daemon_env, free_port

from broker.rpc.gen import signing_pb2 as pb
from broker.rpc.gen import signing_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SIGNER = '[keys.signer]\nuri = "local://signer"\npurpose = "signing"\n'
SHORT_RESILIENCE = "timeout = 1.0\nmax_attempts = 1\n"


class Servers:
    """moto_server and OpenBao, each with a symmetric key to wrap the root key."""

    def __init__(self) -> None:
        """Start both servers."""
        self.moto = start_moto()
        self.bao = start_openbao()

    def aws_key(self) -> str:
        """A fresh symmetric KMS key's URI."""
        return f"aws-kms://{self.moto.create_key()}"

    def vault_key(self, name: str) -> str:
        """A fresh transit key's URI."""
        return f"vault-transit://{self.bao.create_key(name)}"

    def backends(self, aws_endpoint: str | None = None) -> str:
        """[backends] tables for both servers (AWS at another endpoint when given)."""
        return f"""
[backends.aws]
region = "us-east-1"
endpoint_url = "{aws_endpoint or self.moto.url}"
access_key_id = "testing"
secret_access_key = "testing"
[backends.aws.resilience]
{SHORT_RESILIENCE}
[backends.vault]
address = "{self.bao.url}"
token = "{self.bao.root_token}"
[backends.vault.resilience]
{SHORT_RESILIENCE}
"""

    def close(self) -> None:
        """Stop both servers."""
        self.moto.close()
        self.bao.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """The KMS servers of this module."""
    s = Servers()
    try:
        yield s
    finally:
        s.close()


def write_config(path: Path, uri: str | None, backends: str, state: Path | None = None) -> Path:
    """A config with one local signing key and, when given, master_key_uri and state_dir."""
    server = f'[server]\nstate_dir = "{state}"\n' if state else ""
    keyring = f'[keyring]\nmaster_key_uri = "{uri}"\n' if uri else ""
    path.write_text(server + SIGNER + keyring + backends)
    path.chmod(0o600)
    return path


def signature_and_pem(d: Daemon) -> tuple[bytes, str]:
    """Sign once with the local key; its signature and public key."""
    assert d.channel is not None
    stub = signing_pb2_grpc.SigningServiceStub(d.channel)
    signature = stub.Sign(pb.SignRequest(key="signer", data=b"m")).signature
    return signature, stub.GetPublicKey(pb.GetPublicKeyRequest(key="signer")).pem


def still_signs(d: Daemon, signature: bytes, pem: str) -> None:
    """The restarted daemon serves the same key and verifies the old signature."""
    assert d.channel is not None
    stub = signing_pb2_grpc.SigningServiceStub(d.channel)
    assert stub.GetPublicKey(pb.GetPublicKeyRequest(key="signer")).pem == pem
    stub.Verify(pb.VerifyRequest(key="signer", data=b"m", signature=signature))


def restart_keeps_keys(state: Path, config: Path, env: dict[str, str] | None = None) -> None:
    """Start, sign, stop, start again: same key, old signature valid, audit chain intact."""
    first = Daemon(state, env, config=config).start()
    try:
        signature, pem = signature_and_pem(first)
    finally:
        first.stop()
    second = Daemon(state, env, config=config).start()
    try:
        still_signs(second, signature, pem)
        assert "audit_chain_restarted" not in second.log()
    finally:
        second.stop()


def assert_only_wrapped_root(state: Path, uri: str) -> None:
    """master.key is absent; master.key.wrapped is private and names the URI."""
    assert not (state / "master.key").exists()
    wrapped = state / "master.key.wrapped"
    assert stat.S_IMODE(wrapped.stat().st_mode) == 0o600
    assert json.loads(wrapped.read_text())["uri"] == uri


def serve_fails(state: Path, config: Path, env: dict[str, str] | None = None) -> list[str]:
    """Start a daemon that must refuse to start (exit 2); its `keybroker:` error lines."""
    argv = [sys.executable, "-m", "broker", "serve", "--dev", "--config", str(config)]
    argv += ["--state-dir", str(state)]
    full_env = {**Daemon(state, env).env}
    done = subprocess.run(
        argv, capture_output=True, timeout=60, check=False, cwd=state.parent, env=full_env
    )
    assert done.returncode == 2, done.stderr.decode()
    return [ln for ln in done.stderr.decode().splitlines() if ln.startswith("keybroker:")]


class TestWrappedRoot:
    """The root key lives only in wrapped form, and restarts keep the keys."""

    def test_aws_wrapped_root(self, servers, tmp_path):
        """AWS KMS wraps the root key; a restart signs with the same local key."""
        uri = servers.aws_key()
        config = write_config(tmp_path / "k.toml", uri, servers.backends())
        restart_keeps_keys(tmp_path / "state", config)
        assert_only_wrapped_root(tmp_path / "state", uri)

    def test_vault_wrapped_root_from_the_environment(self, servers, tmp_path):
        """KEYBROKER_KEYRING_MASTER_KEY_URI names a transit key instead of the file."""
        uri = servers.vault_key("root-env")
        config = write_config(tmp_path / "k.toml", None, servers.backends())
        env = {"KEYBROKER_KEYRING_MASTER_KEY_URI": uri}
        restart_keeps_keys(tmp_path / "state", config, env)
        assert_only_wrapped_root(tmp_path / "state", uri)

    def test_plain_master_key_is_migrated(self, servers, tmp_path):
        """A keyring made under master.key keeps its keys once the root is wrapped."""
        state = tmp_path / "state"
        plain = Daemon(state, config=write_config(tmp_path / "p.toml", None, "")).start()
        try:
            signature, pem = signature_and_pem(plain)
        finally:
            plain.stop()
        assert (state / "master.key").exists()
        uri = servers.vault_key("root-migrated")
        wrapped = Daemon(state, config=write_config(tmp_path / "w.toml", uri, servers.backends()))
        try:
            still_signs(wrapped.start(), signature, pem)
        finally:
            wrapped.stop()
        assert_only_wrapped_root(state, uri)


def verify_audit(config: Path, audit: Path) -> subprocess.CompletedProcess[str]:
    """`keybroker audit verify --config`, with no root key (or any keybroker setting) in the env."""
    return subprocess.run(
        [sys.executable, "-m", "broker", "audit", "verify", "--config", str(config), str(audit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=daemon_env(),
    )


def report(out: subprocess.CompletedProcess[str]) -> str:
    """The verdict line of `audit verify` (its last line on stdout)."""
    return out.stdout.splitlines()[-1]


class TestAuditVerify:
    """`keybroker audit verify --config` with the root key wrapped by a KMS key."""

    def test_verifies_with_the_daemons_config(self, servers, tmp_path):
        """After a few calls, verify unwraps the root through AWS KMS and reports every record."""
        state = tmp_path / "state"
        uri = servers.aws_key()
        config = write_config(tmp_path / "k.toml", uri, servers.backends(), state)
        d = Daemon(state, config=config).start()
        try:
            for _ in range(3):
                signature_and_pem(d)
        finally:
            d.stop()
        audit = state / "audit.log"
        records = len(audit.read_text().splitlines())
        assert records >= 6
        out = verify_audit(config, audit)
        assert out.returncode == 0, out.stdout + out.stderr
        assert report(out).startswith(f"ok: {records} records, seq 0..{records - 1}, head mac ")
        assert_only_wrapped_root(state, uri)

    def test_a_tampered_record_is_found(self, servers, tmp_path):
        """The key verify unwrapped is the chain's: one changed record fails, naming its line."""
        state = tmp_path / "state"
        config = write_config(tmp_path / "k.toml", servers.aws_key(), servers.backends(), state)
        d = Daemon(state, config=config).start()
        try:
            signature_and_pem(d)
        finally:
            d.stop()
        audit = state / "audit.log"
        lines = audit.read_text().splitlines()
        record = json.loads(lines[0])
        record["caller"] = "someone-else"
        lines[0] = json.dumps(record, separators=(",", ":"))
        audit.write_text("\n".join(lines) + "\n")
        out = verify_audit(config, audit)
        assert out.returncode == 1
        assert report(out).startswith(f"{audit}:1: ")

    @pytest.mark.parametrize("wrapped", [False, True], ids=["master.key", "master.key.wrapped"])
    def test_never_creates_a_root_key(self, servers, tmp_path, wrapped):
        """On an empty state dir verify fails in one line and leaves the directory empty."""
        state = tmp_path / "state"
        state.mkdir()
        uri = servers.aws_key() if wrapped else None
        config = write_config(tmp_path / "k.toml", uri, servers.backends(), state)
        audit = tmp_path / "audit.log"
        audit.write_text("")
        out = verify_audit(config, audit)
        name = "master.key.wrapped" if wrapped else "master.key"
        assert out.returncode == 2
        assert out.stderr.splitlines() == [
            f"keybroker: {state / name}: no root key here; pass the daemon's --config"
        ]
        assert list(state.iterdir()) == []


class TestRefusedStarts:
    """What stops the start, always with one line naming the setting."""

    def test_unreachable_kms(self, servers, tmp_path):
        """Nothing listens at the AWS endpoint: the start fails within the deadline."""
        uri = servers.aws_key()
        nowhere = f"http://127.0.0.1:{free_port()}"
        config = write_config(tmp_path / "k.toml", uri, servers.backends(nowhere))
        errors = serve_fails(tmp_path / "state", config)
        assert errors == [
            (
                f"keybroker: keyring.master_key_uri: {uri} did not unwrap the keyring root key: "
                "key management service unavailable; retry later"
            )
        ]

    def test_kms_refuses_to_unwrap(self, servers, tmp_path):
        """Transit refuses the wrapped root once its version is below the minimum."""
        uri = servers.vault_key("root-refused")
        state = tmp_path / "state"
        config = write_config(tmp_path / "k.toml", uri, servers.backends())
        Daemon(state, config=config).start().stop()
        name = uri.rpartition("/")[2]
        servers.bao.api("POST", f"transit/keys/{name}/rotate")
        servers.bao.api("POST", f"transit/keys/{name}/config", {"min_decryption_version": 2})
        (error,) = serve_fails(state, config)
        assert error.startswith(f"keybroker: keyring.master_key_uri: {uri} did not unwrap")

    def test_other_uri(self, servers, tmp_path):
        """A root wrapped by one key is not handed to another."""
        first, second = servers.aws_key(), servers.aws_key()
        state = tmp_path / "state"
        config = write_config(tmp_path / "a.toml", first, servers.backends())
        Daemon(state, config=config).start().stop()
        config = write_config(tmp_path / "b.toml", second, servers.backends())
        (error,) = serve_fails(state, config)
        assert error == (
            f"keybroker: keyring.master_key_uri: {state}/master.key.wrapped was wrapped by "
            f"{first}, not {second}; set master_key_uri back to it"
        )

    def test_env_master_key_and_uri(self, servers, tmp_path):
        """ECL_CRYPTO_LOCAL_MASTER_KEY and master_key_uri together are a config error."""
        config = write_config(tmp_path / "k.toml", servers.aws_key(), servers.backends())
        env = {"ECL_CRYPTO_LOCAL_MASTER_KEY": "11" * 32}
        assert serve_fails(tmp_path / "state", config, env) == [
            (
                "keybroker: keyring.master_key_uri: set either it or ECL_CRYPTO_LOCAL_MASTER_KEY, "
                "not both"
            )
        ]
