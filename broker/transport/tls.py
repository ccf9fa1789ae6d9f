"""The mTLS listener: TCP with required client certificates, hot-reloaded, TLS 1.3 only.

grpc-python 1.85 has no minimum-TLS-version setting, so the handshake may negotiate TLS 1.2;
the identity resolver then refuses every call on that connection (UNAUTHENTICATED) using the
`ssl_tls_version` the auth context reports. Identity: the SPIFFE ID (`peer_spiffe_id`, the
single URI SAN), else the first DNS SAN (`peer_dns`), else the subject CN, named with its kind
(the SPIFFE ID as it is, `dns:…`, `cn:…`) so that no certificate passes for a listener or a uid.

Certificates reload through `grpc.dynamic_ssl_server_credentials`, whose fetcher runs on
every handshake: it compares three stat() results and reads files only when they changed.
A half-rotated pair (key not matching the certificate) is not taken; the old one stays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.errors import ConfigError, UnauthenticatedError
from broker.policy.authorizer import Caller
from broker.policy.engine import identify
from broker.policy.model import transport_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from pathlib import Path

    from broker.policy.engine import PolicyHolder
    from broker.rpc.calls import Context, IdentityResolver

__all__ = ["CertificateReloader", "TlsFiles", "TlsIdentity", "TlsListener", "tls_caller"]

log = structlog.get_logger("keybroker.tls")
_TLS13 = "TLSv1.3"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The server certificate chain, its private key and the CA that signs client certs."""

    cert: Path
    key: Path
    client_ca: Path


def _first(auth: Mapping[str, Iterable[bytes]], name: str) -> str:
    first = next(iter(auth.get(name) or ()), b"")
    return first.decode("utf-8", "replace")


def tls_caller(auth: Mapping[str, Iterable[bytes]]) -> Caller:
    """The raw caller a verified client certificate names; UNAUTHENTICATED below TLS 1.3."""
    if _first(auth, "transport_security_type") != "ssl" or not _first(auth, "x509_pem_cert"):
        raise UnauthenticatedError
    if _first(auth, "ssl_tls_version") != _TLS13:
        raise UnauthenticatedError
    spiffe, dns, cn = (_first(auth, n) for n in ("peer_spiffe_id", "peer_dns", "x509_common_name"))
    attributes = {k: v for k, v in (("spiffe_id", spiffe), ("dns", dns), ("cn", cn)) if v}
    for kind, name in (("spiffe", spiffe), ("dns", dns), ("cn", cn)):
        if name:
            return Caller(kind=kind, name=transport_name(kind, name), attributes=attributes)
    raise UnauthenticatedError


class TlsIdentity:
    """Resolves callers of an mTLS listener from the connection's auth context."""

    def __init__(self, policy: PolicyHolder) -> None:
        """Map certificate identities through the policy in force."""
        self._policy = policy

    def __call__(self, context: Context) -> Caller:
        """The caller the client certificate names."""
        try:
            raw = tls_caller(context.auth_context())
        except UnauthenticatedError:
            log.warning("tls_rejected", peer=context.peer())
            raise
        return identify(self._policy.current, raw)


def _stamp(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in (files.cert, files.key, files.client_ca):
        st = path.stat()
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _load(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    """Read and check the three files; ValueError when they do not fit together."""
    if files.key.stat().st_mode & 0o077:
        raise ValueError(f"{files.key} is readable by other users; chmod 600 it")
    chain, key_pem, ca = (p.read_bytes() for p in (files.cert, files.key, files.client_ca))
    leaf = x509.load_pem_x509_certificate(chain)
    key = serialization.load_pem_private_key(key_pem, password=None)
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, raw) != key.public_key().public_bytes(der, raw):
        raise ValueError(f"{files.key} does not match the certificate in {files.cert}")
    x509.load_pem_x509_certificates(ca)
    return grpc.ssl_server_certificate_configuration([(key_pem, chain)], root_certificates=ca)


class CertificateReloader:
    """The dynamic-credentials fetcher: cheap when nothing changed, safe when half-changed."""

    def __init__(self, files: TlsFiles) -> None:
        """Load the files once; ConfigError when they are unusable at start."""
        self._files = files
        self._lock = threading.Lock()
        try:
            self._stamp = _stamp(files)
            self.initial = _load(files)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tls: cannot use {files.cert} / {files.key}: {exc}") from None
        self.reloads = 0

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed and fit together, else None."""
        with self._lock:
            try:
                stamp = _stamp(self._files)
                if stamp == self._stamp:
                    return None
                self._stamp = stamp
                config = _load(self._files)
            except (OSError, ValueError) as exc:
                log.warning("tls_reload_skipped", error=str(exc))
                return None
            self.reloads += 1
        log.info("tls_reloaded", cert=str(self._files.cert))
        return config


class TlsListener:
    """A TCP address served with mutual TLS."""

    def __init__(self, address: str, files: TlsFiles, policy: PolicyHolder) -> None:
        """Load the certificates now, so a bad file stops the start."""
        self.address = address
        self.identity: IdentityResolver = TlsIdentity(policy)
        self.reloader = CertificateReloader(files)
        self.port = 0

    async def bind(self, server: grpc.aio.Server) -> None:
        """Add the TLS port; client certificates are required."""
        # the stubs say the fetcher never returns None; grpc documents None as "no change"
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self.reloader)
        credentials = grpc.dynamic_ssl_server_credentials(
            self.reloader.initial, fetch, require_client_authentication=True
        )
        self.port = server.add_secure_port(self.address, credentials)
        if self.port == 0:
            raise ConfigError(f"listeners: could not listen on {self.address}")

    async def serve(self) -> None:
        """The gRPC server accepts by itself."""
        log.info("listening", address=self.address, port=self.port, identity="mtls")

    async def stop_accepting(self) -> None:
        """The gRPC server stops accepting in its own stop()."""

    async def close(self) -> None:
        """Nothing beyond the gRPC server to release."""
