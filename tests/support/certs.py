"""A tiny test PKI with pyca/cryptography: CAs, server and client certificates as PEM."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, PEM encoded."""

    cert: bytes
    key: bytes
    _cert_obj: x509.Certificate
    _key_obj: ec.EllipticCurvePrivateKey

    def write(self, cert: Path, key: Path) -> None:
        """Write both files atomically (rename), the key 0600."""
        for path, data, mode in ((key, self.key, 0o600), (cert, self.cert, 0o644)):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.chmod(mode)
            tmp.replace(path)


def _issue(
    cn: str, issuer: Issued | None, *, ca: bool, sans: list[x509.GeneralName] | None = None
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer._cert_obj.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer._key_obj if issuer else key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem, cert, key)


def ca(name: str = "test-ca") -> Issued:
    """A self-signed CA."""
    return _issue(name, None, ca=True)


def server(issuer: Issued) -> Issued:
    """A server certificate for localhost / 127.0.0.1."""
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    return _issue("keybroker", issuer, ca=False, sans=sans)


def client(issuer: Issued, *, spiffe: str = "", dns: str = "", cn: str = "client") -> Issued:
    """A client certificate with an optional SPIFFE URI SAN and DNS SAN."""
    sans: list[x509.GeneralName] = []
    if spiffe:
        sans.append(x509.UniformResourceIdentifier(spiffe))
    if dns:
        sans.append(x509.DNSName(dns))
    return _issue(cn, issuer, ca=False, sans=sans or None)
