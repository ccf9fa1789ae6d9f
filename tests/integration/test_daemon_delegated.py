"""A daemon whose signing and HMAC keys live in AWS KMS (moto_server) and OpenBao transit.

The daemon is a real process configured by TOML; signatures are checked outside the broker
with pyca and the PEM from GetPublicKey. The Vault token holds only the documented policy
for delegated keys (plus rotation, used by RotateKey).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import TYPE_CHECKING

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from integration.kms.openbao import start_openbao
from integration.kms.servers import start_moto
from support.daemon import Daemon
from support.rpc import assert_fails

from broker.rpc.gen import hashing_pb2, hashing_pb2_grpc, key_admin_pb2, signing_pb2_grpc
from broker.rpc.gen import signing_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
P384 = pb.SIGNATURE_ALGORITHM_ECDSA_P384_SHA384
DELEGATED_POLICY = """
path "transit/keys/*" { capabilities = ["read"] }
path "transit/sign/*" { capabilities = ["update"] }
path "transit/verify/*" { capabilities = ["update"] }
path "transit/hmac/*" { capabilities = ["update"] }
path "transit/keys/+/rotate" { capabilities = ["update"] }
"""
# logical key -> the key version a fresh KMS key signs with
SIGNERS = {"aws-signer": 0, "vault-signer": 1}


class Servers:
    """moto_server and OpenBao with the keys the daemon serves."""

    def __init__(self) -> None:
        """Start both servers and make the keys."""
        self.moto = start_moto()
        self.bao = start_openbao()
        kms = self.moto.client()
        created = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")
        self.aws_signer = created["KeyMetadata"]["Arn"]
        self.vault_signer = self.bao.create_key("signer", key_type="ecdsa-p384")
        self.vault_hmac = self.bao.create_key("macs", key_type="hmac", key_size=32)
        self.bao.write_policy("delegated", DELEGATED_POLICY)
        self.token = self.bao.mint_token(policies=["delegated"])

    def backends(self) -> str:
        """The [backends] tables pointing at the servers."""
        return f"""
[backends.aws]
region = "us-east-1"
endpoint_url = "{self.moto.url}"
access_key_id = "testing"
secret_access_key = "testing"
[backends.vault]
address = "{self.bao.url}"
token = "{self.token}"
"""

    def config(self, path: Path) -> Path:
        """Signing keys on both KMSs and an HMAC key in transit."""
        path.write_text(
            f"""
[keys.aws-signer]
uri = "aws-kms://{self.aws_signer}"
purpose = "signing"
[keys.vault-signer]
uri = "vault-transit://{self.vault_signer}"
purpose = "signing"
[keys.vault-hmac]
uri = "vault-transit://{self.vault_hmac}"
purpose = "hmac"
{self.backends()}"""
        )
        path.chmod(0o600)
        return path

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


@pytest.fixture(scope="module")
def daemon(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon serving the delegated keys."""
    root = tmp_path_factory.mktemp("delegated")
    d = Daemon(root / "state", config=servers.config(root / "keybroker.toml")).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def stub(daemon: Daemon) -> signing_pb2_grpc.SigningServiceStub:
    """SigningService on the daemon."""
    assert daemon.channel is not None
    return signing_pb2_grpc.SigningServiceStub(daemon.channel)


def pem_of(stub: signing_pb2_grpc.SigningServiceStub, key: str, version: int = 0) -> str:
    """The PEM GetPublicKey serves."""
    return stub.GetPublicKey(pb.GetPublicKeyRequest(key=key, key_version=version)).pem


def third_party_verify(pem: str, signature: bytes, message: bytes) -> None:
    """ECDSA P-384/SHA-384 verification with pyca alone."""
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    public.verify(signature, message, ec.ECDSA(hashes.SHA384()))


def flip(value: bytes) -> bytes:
    """The value with its last bit flipped."""
    return value[:-1] + bytes([value[-1] ^ 1])


@pytest.mark.parametrize("key", list(SIGNERS))
class TestDelegatedSigning:
    """Sign in the KMS, verify anywhere."""

    def test_signature_verifies_outside_the_broker(self, stub, key):
        """A signature made over gRPC checks with pyca and the served PEM."""
        reply = stub.Sign(pb.SignRequest(key=key, data=b"invoice 42"))
        assert (reply.key, reply.key_version, reply.algorithm) == (key, SIGNERS[key], P384)
        described = stub.GetPublicKey(pb.GetPublicKeyRequest(key=key))
        assert (described.key_version, described.algorithm) == (SIGNERS[key], P384)
        third_party_verify(described.pem, reply.signature, b"invoice 42")
        with pytest.raises(InvalidSignature):
            third_party_verify(described.pem, reply.signature, b"invoice 43")

    def test_verify_and_tampered_signature(self, stub, key):
        """Verify accepts the signature and refuses a flipped one with VERIFICATION_FAILED."""
        signature = stub.Sign(pb.SignRequest(key=key, data=b"m")).signature
        verified = stub.Verify(pb.VerifyRequest(key=key, data=b"m", signature=signature))
        assert verified.key_version == SIGNERS[key]
        bad = pb.VerifyRequest(key=key, data=b"m", signature=flip(signature))
        assert_fails(stub.Verify, bad, INVALID, "VERIFICATION_FAILED")

    def test_batches(self, stub, key):
        """SignBatch and VerifyBatch go item by item; a bad item fails alone."""
        items = [pb.SignRequest(key=key, data=b"row %d" % i) for i in range(5)]
        signed = stub.SignBatch(pb.SignBatchRequest(items=items)).results
        checks = [
            pb.VerifyRequest(key=key, data=b"row %d" % i, signature=r.response.signature)
            for i, r in enumerate(signed)
        ]
        checks[2].data = b"changed"
        results = stub.VerifyBatch(pb.VerifyBatchRequest(items=checks)).results
        assert [r.WhichOneof("result") for r in results] == ["response"] * 2 + ["error"] + [
            "response"
        ] * 2
        assert results[2].error.reason == "VERIFICATION_FAILED"


class TestVaultSpecifics:
    """Rotation, digests and HMAC in transit."""

    def test_old_signatures_verify_after_rotation(self, daemon, stub):
        """After RotateKey, a v1 signature still verifies and new ones are v2."""
        old = stub.Sign(pb.SignRequest(key="vault-signer", data=b"before"))
        old_pem = pem_of(stub, "vault-signer", old.key_version)
        rotated = daemon.admin.RotateKey(key_admin_pb2.RotateKeyRequest(key="vault-signer")).key
        new = stub.Sign(pb.SignRequest(key="vault-signer", data=b"after"))
        assert new.key_version == rotated.current_version == old.key_version + 1
        check = pb.VerifyRequest(key="vault-signer", data=b"before", signature=old.signature)
        assert stub.Verify(check).key_version == old.key_version
        assert pem_of(stub, "vault-signer", old.key_version) == old_pem
        third_party_verify(old_pem, old.signature, b"before")
        third_party_verify(pem_of(stub, "vault-signer"), new.signature, b"after")

    def test_digest_signature(self, stub):
        """A SHA-384 digest signed in transit checks as a signature over the digest."""
        digest = hashlib.sha384(b"big document").digest()
        reply = stub.Sign(pb.SignRequest(key="vault-signer", digest=digest))
        public = serialization.load_pem_public_key(pem_of(stub, "vault-signer").encode())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(reply.signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
        short = pb.SignRequest(key="vault-signer", digest=digest[:32])
        assert_fails(stub.Sign, short, INVALID, message="digest must be 48 bytes")

    def test_hmac_in_transit(self, daemon):
        """ComputeHmac and VerifyHmac run on the transit key; a changed MAC fails."""
        assert daemon.channel is not None
        hashing = hashing_pb2_grpc.HashingServiceStub(daemon.channel)
        made = hashing.ComputeHmac(hashing_pb2.ComputeHmacRequest(key="vault-hmac", data=b"x"))
        assert (len(made.mac), made.key_version) == (32, 1)
        check = hashing_pb2.VerifyHmacRequest(key="vault-hmac", data=b"x", mac=made.mac)
        assert hashing.VerifyHmac(check).key_version == 1
        check.mac = flip(made.mac)
        assert_fails(hashing.VerifyHmac, check, INVALID, "VERIFICATION_FAILED")

    def test_hmac_key_does_not_sign(self, stub):
        """A key configured for HMAC refuses Sign with FAILED_PRECONDITION."""
        assert_fails(stub.Sign, pb.SignRequest(key="vault-hmac", data=b"m"), PRECONDITION)


class TestAwsSpecifics:
    """What AWS KMS keys report and refuse."""

    def test_describe_and_no_rotation(self, daemon):
        """DescribeKey names the algorithm; asymmetric KMS keys cannot rotate."""
        described = daemon.admin.DescribeKey(key_admin_pb2.DescribeKeyRequest(key="aws-signer"))
        assert described.key.algorithm == "ecdsa-p384-sha384"
        assert described.key.purpose == key_admin_pb2.KEY_PURPOSE_SIGNING
        rotate = key_admin_pb2.RotateKeyRequest(key="aws-signer")
        assert_fails(daemon.admin.RotateKey, rotate, PRECONDITION)

    def test_other_versions_do_not_exist(self, stub):
        """GetPublicKey of version 1 of a KMS key is FAILED_PRECONDITION."""
        request = pb.GetPublicKeyRequest(key="aws-signer", key_version=1)
        assert_fails(stub.GetPublicKey, request, PRECONDITION, message="only version 0")


def serve_fails(tmp_path: Path, toml: str) -> tuple[int, list[str]]:
    """Start a daemon that must refuse its configuration: (exit code, error lines)."""
    config = tmp_path / "k.toml"
    config.write_text(toml)
    config.chmod(0o600)
    argv = [sys.executable, "-m", "broker", "serve", "--dev", "--config", str(config)]
    argv += ["--state-dir", str(tmp_path / "state")]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False, cwd=tmp_path)
    errors = [ln for ln in done.stderr.decode().splitlines() if ln.startswith("keybroker:")]
    return done.returncode, errors


class TestRefusedAtStart:
    """Purposes a backend cannot serve stop the start with one line naming the field."""

    @pytest.mark.parametrize(
        ("uri", "purpose", "message"),
        [
            (
                "aws-kms://alias/x",
                "asymmetric_decrypt",
                "keys.k.purpose: aws-kms:// keys serve envelope, signing, not asymmetric_decrypt",
            ),
            (
                "aws-kms://alias/x",
                "hmac",
                "keys.k.purpose: aws-kms:// keys serve envelope, signing, not hmac",
            ),
            (
                "vault-transit://transit/x",
                "derivation",
                (
                    "keys.k.purpose: vault-transit:// keys serve envelope, signing, hmac, "
                    "not derivation"
                ),
            ),
        ],
    )
    def test_unsupported_purpose(self, servers, tmp_path, uri, purpose, message):
        """The daemon exits 2 before serving."""
        toml = f'[keys.k]\nuri = "{uri}"\npurpose = "{purpose}"\n{servers.backends()}'
        code, errors = serve_fails(tmp_path, toml)
        assert (code, errors) == (2, [f"keybroker: {message}"])

    def test_multi_wrap_is_for_envelope_keys(self, servers, tmp_path):
        """also_wrap on a signing key is refused."""
        toml = (
            f'[keys.k]\nuri = "vault-transit://{servers.vault_signer}"\npurpose = "signing"\n'
            f'also_wrap = ["aws-kms://{servers.aws_signer}"]\n{servers.backends()}'
        )
        code, errors = serve_fails(tmp_path, toml)
        assert code == 2
        assert errors == [
            "keybroker: keys.k.also_wrap: only envelope keys are wrapped by several backends"
        ]
