"""Composition root: the only place that wires concrete classes together."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from broker.config.validate import local_key_type_of
from broker.daemon.crypto import crypto_services
from broker.daemon.logs import configure_logging
from broker.daemon.metrics import BrokerCollector, serve_metrics
from broker.daemon.root_key import RootKey
from broker.daemon.security import Security, build_security, harden
from broker.kms.local.backend import LocalBackend
from broker.kms.local.keyring import Keyring
from broker.kms.multiwrap import MultiWrapBackend
from broker.kms.registry import LOCAL_SCHEME, build_remote_backend
from broker.rpc.envelope import EnvelopeServicer
from broker.rpc.gen import envelope_pb2, envelope_pb2_grpc, key_admin_pb2, key_admin_pb2_grpc
from broker.rpc.key_admin import KeyAdminServicer
from broker.services.admin import KeyAdminService
from broker.services.deks import DekLimits, DekProvider
from broker.services.envelope import EnvelopeLimits, EnvelopeService
from broker.services.keys import KeyRegistry, ResolvedKey
from broker.transport.server import BrokerServer, ServicerSpec

if TYPE_CHECKING:
    from types import ModuleType

    from broker.config.schema import Config, KeyConfig
    from broker.kms.base import KmsBackend

__all__ = ["App", "build_app", "serve"]

log = structlog.get_logger("keybroker")


@dataclass
class App:
    """A built daemon: its server, DEK provider and backends."""

    server: BrokerServer
    deks: DekProvider
    backends: dict[str, KmsBackend]
    security: Security | None = None

    async def start(self) -> None:
        """Bind and serve."""
        await self.server.start()
        if self.security is not None:
            await self.security.start()

    async def stop(self, grace: float) -> None:
        """Drain calls, remove sockets, close backends."""
        await self.server.stop(grace)
        for backend in self.backends.values():
            await backend.close()
        if self.security is not None:
            await self.security.stop()


def _local_backend(cfg: Config, root_key: RootKey) -> LocalBackend:
    state = cfg.server.state_dir
    if not state.exists():
        state.mkdir(mode=0o750, parents=True)
    return LocalBackend(Keyring.open(state / "keyring.json", root_key()))


class _BackendPool:
    """One backend instance per backend kind, created when a key first needs it."""

    def __init__(self, cfg: Config, root_key: RootKey) -> None:
        self._cfg = cfg
        self._root_key = root_key
        self.local: LocalBackend | None = None
        self.all: dict[str, KmsBackend] = {}

    def member(self, kc: KeyConfig, uri: str) -> tuple[KmsBackend, str]:
        """The backend and backend key id for one URI of a logical key."""
        scheme, _, key_id = uri.partition("://")
        if scheme == LOCAL_SCHEME:
            if self.local is None:
                self.local = _local_backend(self._cfg, self._root_key)
                self.all[LOCAL_SCHEME] = self.local
            _ensure_local(self.local, kc, key_id)
            return self.local, key_id
        if scheme not in self.all:
            self.all[scheme] = build_remote_backend(scheme, self._cfg.backends)
        return self.all[scheme], key_id


def _resolve(
    cfg: Config, root_key: RootKey
) -> tuple[dict[str, ResolvedKey], dict[str, KmsBackend]]:
    """Bind each logical key to its backend; `also_wrap` keys get a multi-wrap backend."""
    pool = _BackendPool(cfg, root_key)
    keys: dict[str, ResolvedKey] = {}
    for name, kc in sorted(cfg.keys.items()):
        backend, key_id = pool.member(kc, kc.uri)
        if kc.also_wrap:
            members = [(backend, key_id), *(pool.member(kc, uri) for uri in kc.also_wrap)]
            backend, key_id = MultiWrapBackend(members), name
        keys[name] = ResolvedKey(name, kc.uri, kc.purpose, backend, key_id)
    return keys, pool.all


def _ensure_local(backend: LocalBackend, kc: KeyConfig, key_id: str) -> None:
    key_type = local_key_type_of(kc)
    if backend.ensure_key(key_id, key_type):
        log.info("local_key_created", key=kc.name, type=key_type)


def _service_name(module: ModuleType, service: str) -> str:
    """The full gRPC name of a service declared in a generated module."""
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


def build_app(cfg: Config) -> App:
    """Wire a configuration from validated_config (so already checked) into a daemon."""
    root_key = RootKey(cfg)
    keys, backends = _resolve(cfg, root_key)
    c = cfg.cache
    deks = DekProvider(
        DekLimits(
            enabled=c.enabled,
            decrypt_max_entries=c.decrypt_max_entries,
            decrypt_ttl_seconds=c.decrypt_ttl_seconds,
            encrypt_max_age_seconds=c.encrypt_max_age_seconds,
            encrypt_max_messages=c.encrypt_max_messages,
            encrypt_max_bytes=c.encrypt_max_bytes,
        )
    )
    registry = KeyRegistry(keys)
    security = build_security(cfg, root_key)
    authz = security.authorizer
    limits = EnvelopeLimits(
        max_plaintext_bytes=cfg.server.max_plaintext_bytes,
        max_batch_items=cfg.server.max_batch_items,
        lease_ttl_seconds=c.lease_ttl_seconds,
        lease_max_messages=c.lease_max_messages,
        lease_max_bytes=c.lease_max_bytes,
    )
    envelope = EnvelopeService(registry, deks, authz, limits, audit=security.observer)
    admin = KeyAdminService(registry, deks, authz)
    services = [
        ServicerSpec(
            _service_name(envelope_pb2, "EnvelopeService"),
            envelope_pb2_grpc.add_EnvelopeServiceServicer_to_server,
            lambda ident, m: EnvelopeServicer(envelope, ident, m),
        ),
        ServicerSpec(
            _service_name(key_admin_pb2, "KeyAdminService"),
            key_admin_pb2_grpc.add_KeyAdminServiceServicer_to_server,
            lambda ident, m: KeyAdminServicer(admin, ident, m),
        ),
        *crypto_services(cfg, registry, authz, security.observer),
    ]
    server = BrokerServer(
        services,
        security.listeners,
        max_plaintext_bytes=cfg.server.max_plaintext_bytes,
        max_concurrent_rpcs=cfg.server.max_concurrent_rpcs,
        observer=security.observer,
    )
    if cfg.metrics.listen:
        metrics = serve_metrics(cfg.metrics.listen, BrokerCollector(server.metrics, deks, backends))
        metrics.register(security.collector())
    return App(server, deks, backends, security)


async def serve(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully; the process exit code."""
    configure_logging(cfg.logging.level, cfg.logging.format)
    harden(cfg)
    app = build_app(cfg)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if app.security is not None:
        loop.add_signal_handler(signal.SIGHUP, app.security.on_sighup)
    await app.start()
    log.info("started", keys=sorted(cfg.keys), dev=cfg.dev)
    await stopping.wait()
    log.info("stopping", grace_seconds=cfg.server.grace_seconds)
    await app.stop(cfg.server.grace_seconds)
    log.info("stopped")
    return 0
