"""The mTLS listener: identity from the SPIFFE SAN, rejection of foreign certs, live rotation."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import grpc
import pytest
from support import certs
from support.daemon import free_port
from support.secrets_ledger import remember

from broker.errors import UnauthenticatedError
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc
from broker.transport.tls import tls_caller

CONFIG = """
[server]
state_dir = "{state}"
allow_root = true

[[listeners]]
kind = "unix"
path = "{run}/ops.sock"
mode = "0600"
identity = "ops"

[[listeners]]
kind = "tcp"
address = "127.0.0.1:{port}"
[listeners.tls]
cert = "{base}/server.pem"
key = "{base}/server.key"
client_ca = "{base}/ca.pem"

[keys.default]
uri = "local://default"

[policy.identities.app-a]
spiffe_id = "spiffe://example.org/app-a"

[policy.identities.billing]
dns = "billing.internal"

[[policy.rules]]
id = "app-a-encrypt"
callers = ["app-a", "billing"]
keys = ["default"]
operations = ["encrypt", "decrypt"]
"""


class Pki:
    """The CA, server cert and files a daemon reads."""

    def __init__(self, base) -> None:
        """Issue the first chain into base."""
        self.base = base
        self.rotate()

    def rotate(self) -> None:
        """A new CA and server certificate, written in place (rename per file)."""
        self.ca = certs.ca()
        self.server = certs.server(self.ca)
        remember(self.server.key, self.ca.key)
        self.server.write(self.base / "server.pem", self.base / "server.key")
        (self.base / ".ca.tmp").write_bytes(self.ca.cert)
        (self.base / ".ca.tmp").replace(self.base / "ca.pem")

    def channel(self, port: int, client: certs.Issued | None, trust: certs.Issued | None = None):
        """A TLS channel presenting client (or no certificate), trusting trust or the CA."""
        creds = grpc.ssl_channel_credentials(
            root_certificates=(trust or self.ca).cert,
            private_key=client.key if client else None,
            certificate_chain=client.cert if client else None,
        )
        return grpc.secure_channel(f"127.0.0.1:{port}", creds)


@pytest.fixture
def tls_daemon(configured):
    """A daemon with an mTLS listener; returns (daemon, pki, port)."""
    port = free_port()
    daemon = configured(CONFIG, port=port)
    daemon.base.chmod(0o700)
    pki = Pki(daemon.base)
    daemon.start()
    return daemon, pki, port


def _encrypt(channel, plaintext: bytes = b"tls") -> bytes:
    stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
    return stub.Encrypt(
        pb.EncryptRequest(key="default", plaintext=plaintext), timeout=10
    ).ciphertext


class TestIdentity:
    """Who the certificate says the caller is."""

    def test_spiffe_identity(self, tls_daemon):
        """A client cert with the SPIFFE URI SAN is `app-a`, as the audit record shows."""
        daemon, pki, port = tls_daemon
        client = certs.client(pki.ca, spiffe="spiffe://example.org/app-a", dns="a.internal")
        with pki.channel(port, client) as channel:
            assert _encrypt(channel)
        op = [r for r in daemon.records() if r["event"] == "op"][-1]
        assert (op["caller"], op["caller_kind"]) == ("app-a", "spiffe")
        assert op["spiffe_id"] == "spiffe://example.org/app-a"

    def test_dns_identity(self, tls_daemon):
        """Without a URI SAN the DNS SAN names the caller."""
        _, pki, port = tls_daemon
        with pki.channel(port, certs.client(pki.ca, dns="billing.internal")) as channel:
            assert _encrypt(channel)

    def test_unknown_spiffe_id_is_denied(self, tls_daemon):
        """A valid certificate for an identity without rules gets PERMISSION_DENIED."""
        _, pki, port = tls_daemon
        client = certs.client(pki.ca, spiffe="spiffe://example.org/other")
        with pki.channel(port, client) as channel, pytest.raises(grpc.RpcError) as info:
            _encrypt(channel)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


class TestRejected:
    """No certificate, or one from another CA, never reaches a handler."""

    def test_wrong_ca(self, tls_daemon):
        """A client certificate from a foreign CA fails the handshake."""
        _, pki, port = tls_daemon
        foreign = certs.client(certs.ca("foreign"), spiffe="spiffe://example.org/app-a")
        with pki.channel(port, foreign) as channel, pytest.raises(grpc.RpcError) as info:
            _encrypt(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    def test_no_certificate(self, tls_daemon):
        """A client without a certificate fails the handshake."""
        _, pki, port = tls_daemon
        with pki.channel(port, None) as channel, pytest.raises(grpc.RpcError) as info:
            _encrypt(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


class TestRotation:
    """New chain accepted on new connections; existing connections keep working under load."""

    def test_rotation_under_load(self, tls_daemon):
        """Calls on an old connection never fail while the CA and server cert are replaced."""
        _, pki, port = tls_daemon
        old_client = certs.client(pki.ca, spiffe="spiffe://example.org/app-a")
        old_channel = pki.channel(port, old_client)
        _encrypt(old_channel)
        failures: list[Exception] = []
        calls = [0]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    _encrypt(old_channel)
                    calls[0] += 1
                except grpc.RpcError as exc:
                    failures.append(exc)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(0.3)
            old_ca = pki.ca
            pki.rotate()
            new_client = certs.client(pki.ca, spiffe="spiffe://example.org/app-a")
            with pki.channel(port, new_client) as channel:
                assert _encrypt(channel)
            with (
                pki.channel(port, old_client, trust=old_ca) as channel,
                pytest.raises(grpc.RpcError),
            ):
                _encrypt(channel)
            time.sleep(0.3)
        finally:
            stop.set()
            worker.join()
            old_channel.close()
        assert failures == []
        assert calls[0] > 10


class TestAuthContext:
    """tls_caller reads the keys grpcio 1.85 puts in auth_context()."""

    BASE: ClassVar[dict[str, list[bytes]]] = {
        "transport_security_type": [b"ssl"],
        "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----"],
        "ssl_tls_version": [b"TLSv1.3"],
        "x509_common_name": [b"cn-name"],
    }

    def test_precedence(self):
        """SPIFFE ID, then DNS SAN, then CN, each name typed by its kind."""
        spiffe = {**self.BASE, "peer_spiffe_id": [b"spiffe://x/y"], "peer_dns": [b"d.x"]}
        dns = {**self.BASE, "peer_dns": [b"d.x"]}
        named = [(c.kind, c.name) for c in map(tls_caller, (spiffe, dns, self.BASE))]
        assert named == [("spiffe", "spiffe://x/y"), ("dns", "dns:d.x"), ("cn", "cn:cn-name")]

    @pytest.mark.parametrize("cn", [b"ops", b"uid:0", b"listener:ops", b"spiffe://x/y"])
    def test_a_certificate_name_is_never_another_kind(self, cn):
        """Whatever a CN says, the caller's name is `cn:` followed by it."""
        assert tls_caller({**self.BASE, "x509_common_name": [cn]}).name == f"cn:{cn.decode()}"

    @pytest.mark.parametrize(
        "change",
        [
            {"ssl_tls_version": [b"TLSv1.2"]},
            {"transport_security_type": [b"insecure"]},
            {"x509_pem_cert": []},
        ],
    )
    def test_refused(self, change):
        """TLS 1.2, a plaintext transport or no client certificate is UNAUTHENTICATED."""
        with pytest.raises(UnauthenticatedError):
            tls_caller({**self.BASE, **change})
