"""One daemon serving keys on every backend at once, against real KMS servers.

moto_server (AWS KMS), OpenBao (Vault Transit, a persistent single-node server so that its
keys survive a restart), our in-test Cloud KMS gRPC server and a SoftHSM2 token are started
here; the daemon is a real process configured by a TOML file.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from integration.kms.gcp_server import GcpKmsServer
from integration.kms.openbao import start_openbao
from integration.kms.servers import start_moto
from integration.kms.softhsm import PIN, TOKEN_LABEL
from support.daemon import Daemon

from broker.kms.pkcs11 import Pkcs11Backend
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import key_admin_pb2

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from integration.kms.softhsm import SoftHsm

FIXED = "ciphertext could not be decrypted"
GCP_KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/envelope"
HSM_KEY = f"{TOKEN_LABEL}/daemon-kek"
BACKEND_KEYS = ["on-local", "on-aws", "on-vault", "on-gcp", "on-hsm"]


class Servers:
    """The running KMS servers and the keys made in them."""

    def __init__(self, softhsm: SoftHsm) -> None:
        """Start every server and create the keys the daemon will use."""
        self.moto = start_moto()
        self.bao = start_openbao(persistent=True)
        self.gcp = GcpKmsServer().start()
        self.softhsm = softhsm
        self.aws_arn = self.moto.create_key(alias="app")
        self.aws_dr_arn = self.moto.create_key()
        self.vault_key = self.bao.create_key("app")
        self.vault_dr_key = self.bao.create_key("dr")
        self.gcp.create_key(GCP_KEY)
        asyncio.run(self._hsm_key())

    async def _hsm_key(self) -> None:
        hsm = Pkcs11Backend(self.softhsm.settings())
        try:
            await hsm.ensure_key(HSM_KEY)
        finally:
            await hsm.close()

    def config(self, path: Path, *, timeout: float = 2.0) -> Path:
        """A daemon configuration naming one key per backend, and a multi-wrap key."""
        resilience = f"timeout = {timeout}\nbreaker_failures = 2\nbreaker_reset_seconds = 1\n"
        path.write_text(
            f"""
[keys.on-local]
uri = "local://on-local"
[keys.on-aws]
uri = "aws-kms://{self.aws_arn}"
[keys.on-vault]
uri = "vault-transit://{self.vault_key}"
[keys.on-gcp]
uri = "gcp-kms://{GCP_KEY}"
[keys.on-hsm]
uri = "pkcs11://{HSM_KEY}"
[keys.recoverable]
uri = "vault-transit://{self.vault_dr_key}"
also_wrap = ["aws-kms://{self.aws_dr_arn}"]

[backends.aws]
region = "us-east-1"
endpoint_url = "{self.moto.url}"
access_key_id = "testing"
secret_access_key = "testing"
[backends.aws.resilience]
{resilience}
[backends.vault]
address = "{self.bao.url}"
token = "{self.bao.root_token}"
[backends.vault.resilience]
{resilience}
[backends.gcp]
endpoint = "{self.gcp.endpoint}"
[backends.gcp.resilience]
{resilience}
[backends.pkcs11]
token_label = "{TOKEN_LABEL}"
module = "{self.softhsm.module}"
pin = "{PIN}"
"""
        )
        path.chmod(0o600)
        return path

    def close(self) -> None:
        """Stop every server."""
        for server in (self.moto, self.bao, self.gcp):
            server.stop()


@pytest.fixture(scope="module")
def servers(softhsm: SoftHsm) -> Iterator[Servers]:
    """Every KMS server for this module."""
    s = Servers(softhsm)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def daemon(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with keys on all five backends."""
    root = tmp_path_factory.mktemp("multi")
    d = Daemon(root / "state", config=servers.config(root / "keybroker.toml")).start()
    try:
        yield d
    finally:
        d.stop()


def _encrypt(d: Daemon, key: str, plaintext: bytes, context: dict[str, str]) -> pb.EncryptResponse:
    return d.envelope.Encrypt(pb.EncryptRequest(key=key, plaintext=plaintext, context=context))


def _decrypt(d: Daemon, ciphertext: bytes, context: dict[str, str]) -> bytes:
    return d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, context=context)).plaintext


@pytest.mark.parametrize("key", BACKEND_KEYS)
class TestEveryBackend:
    """The same envelope behaviour, whichever backend holds the key."""

    def test_round_trip_and_context(self, daemon, key):
        """Sealed data opens with its context and is refused with another one."""
        sealed = _encrypt(daemon, key, b"payload " + key.encode(), {"tenant": "a"})
        assert _decrypt(daemon, sealed.ciphertext, {"tenant": "a"}) == b"payload " + key.encode()
        with pytest.raises(grpc.RpcError) as info:
            _decrypt(daemon, sealed.ciphertext, {"tenant": "b"})
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            FIXED,
        )

    def test_rotation_keeps_old_envelopes(self, daemon, key):
        """After RotateKey, old envelopes still open and new ones use the current version."""
        old = _encrypt(daemon, key, b"before", {})
        rotated = daemon.admin.RotateKey(key_admin_pb2.RotateKeyRequest(key=key)).key
        new = _encrypt(daemon, key, b"after", {})
        assert new.key_version == rotated.current_version
        assert _decrypt(daemon, old.ciphertext, {}) == b"before"
        assert _decrypt(daemon, new.ciphertext, {}) == b"after"

    def test_describe(self, daemon, key):
        """DescribeKey names the backend and never returns material."""
        described = daemon.admin.DescribeKey(key_admin_pb2.DescribeKeyRequest(key=key)).key
        assert described.name == key
        assert described.uri.startswith(described.backend.split("-")[0])

    def test_streams(self, daemon, key):
        """A multi-segment stream round-trips on this backend."""
        data = bytes(range(256)) * 4000
        start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key=key))
        chunks = [start, pb.EncryptStreamRequest(chunk=data)]
        envelope = b"".join(r.chunk for r in daemon.envelope.EncryptStream(iter(chunks)))
        assert _decrypt(daemon, envelope, {}) == data


class TestCacheAgainstRealKms:
    """The DEK cache keeps KMS traffic to a handful of calls."""

    def test_ten_thousand_encrypts_on_aws(self, daemon):
        """10,000 encrypts under one AWS key and context make at most one GenerateDataKey."""
        before = daemon.metric("keybroker_kms_calls_total", op="generate_data_key")
        items = [pb.EncryptRequest(key="on-aws", plaintext=b"row", context={"t": "cache"})] * 1000
        for _ in range(10):
            daemon.envelope.EncryptBatch(pb.EncryptBatchRequest(items=items))
        after = daemon.metric("keybroker_kms_calls_total", op="generate_data_key")
        assert after - before <= 1


class TestRefusedCredentials:
    """A KMS that refuses the broker's own credentials is a configuration problem."""

    def test_permission_denied_and_logged(self, servers, daemon):
        """The caller gets PERMISSION_DENIED; the daemon log names the configuration problem."""
        with servers.moto.iam_enforced(), pytest.raises(grpc.RpcError) as info:
            _encrypt(daemon, "on-aws", b"x", {"t": "fresh context, so no cached DEK"})
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "kms_credentials_refused" in daemon.log()
        assert "testing" not in info.value.details()


class TestOutages:
    """KMS failures: fast UNAVAILABLE, breaker, recovery without restart, multi-wrap."""

    @pytest.fixture
    def uncached(self, servers: Servers, tmp_path: Path) -> Iterator[Daemon]:
        """A daemon with the DEK cache off, so every call reaches the KMS."""
        env = {"ECL_CRYPTO_DEK_CACHE_ENABLED": "false"}
        d = Daemon(tmp_path / "state", env, config=servers.config(tmp_path / "k.toml")).start()
        try:
            yield d
        finally:
            d.stop()

    def test_kms_down_then_back(self, servers, uncached):
        """Vault down: UNAVAILABLE within the timeout, then fail-fast; back: calls succeed."""
        sealed = _encrypt(uncached, "on-vault", b"x", {})
        servers.bao.stop()
        try:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                _encrypt(uncached, "on-vault", b"x", {})
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 2.0 + 1.5
            with pytest.raises(grpc.RpcError):
                _decrypt(uncached, sealed.ciphertext, {})
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                _encrypt(uncached, "on-vault", b"x", {})
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 0.5, "the open breaker fails fast"
            open_state = {"backend": "vault-transit", "state": "open"}
            assert uncached.metric("keybroker_kms_breaker_state", **open_state) == 1
            assert _encrypt(uncached, "on-aws", b"other backends serve on", {}).ciphertext
        finally:
            servers.bao.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                assert _decrypt(uncached, sealed.ciphertext, {}) == b"x"
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert _decrypt(uncached, _encrypt(uncached, "on-vault", b"y", {}).ciphertext, {}) == b"y"

    def test_multi_wrap_survives_primary_outage(self, servers, uncached):
        """With the primary (Vault) down, a multi-wrapped envelope opens via AWS."""
        sealed = _encrypt(uncached, "recoverable", b"disaster", {"t": "dr"})
        servers.bao.stop()
        try:
            assert _decrypt(uncached, sealed.ciphertext, {"t": "dr"}) == b"disaster"
        finally:
            servers.bao.start()
