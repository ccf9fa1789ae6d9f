"""Local key types: configuration, DescribeKey and persistence across restarts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker.rpc.gen import key_admin_pb2 as admin_pb
from broker.rpc.gen import signing_pb2 as sig_pb
from broker.rpc.gen import signing_pb2_grpc

# key -> (purpose, algorithm DescribeKey reports)
EXPECTED = {
    "default": (admin_pb.KEY_PURPOSE_ENVELOPE, "aes-256-gcm"),
    "signing": (admin_pb.KEY_PURPOSE_SIGNING, "ecdsa-p384-sha384"),
    "p256": (admin_pb.KEY_PURPOSE_SIGNING, "ecdsa-p256-sha256"),
    "ed": (admin_pb.KEY_PURPOSE_SIGNING, "ed25519"),
    "pss3072": (admin_pb.KEY_PURPOSE_SIGNING, "rsa-pss-3072-sha256"),
    "pss4096": (admin_pb.KEY_PURPOSE_SIGNING, "rsa-pss-4096-sha256"),
    "rsa": (admin_pb.KEY_PURPOSE_ASYMMETRIC_DECRYPT, "rsa-oaep-4096-sha256"),
    "hmac": (admin_pb.KEY_PURPOSE_HMAC, "hmac-sha256"),
    "derive": (admin_pb.KEY_PURPOSE_DERIVATION, "secret-256"),
}
ED_KEY = '[keys.ed]\nuri = "local://ed"\npurpose = "signing"\nalgorithm = "ed25519"\n'


def _serve(tmp_path, toml):
    config = tmp_path / "k.toml"
    config.write_text(toml)
    argv = [sys.executable, "-m", "broker", "serve", "--dev", "--config", str(config)]
    argv += ["--state-dir", str(tmp_path / "state")]
    return subprocess.run(argv, capture_output=True, timeout=60, check=False, cwd=tmp_path)


class TestKeyConfiguration:
    """`[keys.NAME] purpose` and `algorithm` choose the local key type."""

    @pytest.mark.parametrize("key", list(EXPECTED))
    def test_describe_key(self, keys_daemon, key):
        """DescribeKey reports each key's purpose and algorithm, never material."""
        described = keys_daemon.admin.DescribeKey(admin_pb.DescribeKeyRequest(key=key)).key
        assert (described.purpose, described.algorithm) == EXPECTED[key]

    @pytest.mark.parametrize(
        ("purpose", "algorithm", "message"),
        [
            ("signing", "rsa-oaep-4096-sha256", "keys.k.algorithm: signing keys take one of"),
            ("asymmetric_decrypt", "ed25519", "keys.k.algorithm: asymmetric_decrypt keys take"),
            ("hmac", "secret-256", "keys.k.algorithm: hmac keys take one of hmac-sha256"),
            ("derivation", "hmac-sha256", "keys.k.algorithm: derivation keys take one of"),
            ("envelope", "ecdsa-p384-sha384", "keys.k.algorithm: envelope keys take one of"),
        ],
    )
    def test_invalid_combination_stops_the_start(self, tmp_path, purpose, algorithm, message):
        """The daemon exits 2 with one line naming the field."""
        toml = f'[keys.k]\nuri = "local://k"\npurpose = "{purpose}"\nalgorithm = "{algorithm}"\n'
        done = _serve(tmp_path, toml)
        errors = [ln for ln in done.stderr.decode().splitlines() if ln.startswith("keybroker:")]
        assert done.returncode == 2
        assert len(errors) == 1
        assert errors[0].startswith(f"keybroker: {message}")

    def test_keys_survive_a_restart(self, make_daemon, tmp_path):
        """A restarted daemon signs with the same key and verifies signatures made before."""
        config = tmp_path / "ed.toml"
        config.write_text(ED_KEY)
        first = make_daemon().start("--config", str(config))
        stub = signing_pb2_grpc.SigningServiceStub(first.channel)
        signature = stub.Sign(sig_pb.SignRequest(key="ed", data=b"m")).signature
        pem = stub.GetPublicKey(sig_pb.GetPublicKeyRequest(key="ed")).pem
        first.stop()
        second = make_daemon().start("--config", str(config))
        stub = signing_pb2_grpc.SigningServiceStub(second.channel)
        assert stub.GetPublicKey(sig_pb.GetPublicKeyRequest(key="ed")).pem == pem
        stub.Verify(sig_pb.VerifyRequest(key="ed", data=b"m", signature=signature))
