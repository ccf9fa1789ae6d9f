"""Composition root: the only place that wires concrete classes together."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from broker.config.validate import local_key_type_of
from broker.daemon.crypto import crypto_services
from broker.daemon.health import KEYSTORE_HEALTH, BackendProber, prober_for
from broker.daemon.keystore import LocalKeys
from broker.daemon.logs import configure_logging
from broker.daemon.metrics import (
    BackendHealthCollector,
    BrokerCollector,
    KeyStoreCollector,
    serve_metrics,
)
from broker.daemon.security import Security, build_security, harden
from broker.kms.local.backend import LocalBackend
from broker.kms.multiwrap import MultiWrapBackend
from broker.kms.registry import LOCAL_SCHEME, build_remote_backend
from broker.rpc.envelope import envelope_spec
from broker.rpc.key_admin import key_admin_spec
from broker.services.admin import KeyAdminService
from broker.services.deks import DekLimits, DekProvider
from broker.services.envelope import EnvelopeLimits, EnvelopeService
from broker.services.keys import KeyRegistry, ResolvedKey
from broker.transport.server import BrokerServer, CallLimits

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.config.schema import Config, KeyConfig
    from broker.kms.base import KmsBackend

__all__ = ["App", "build_app", "serve"]

log = structlog.get_logger("keybroker")


@dataclass
class App:
    """A built daemon: its server, DEK provider, backends and key store."""

    server: BrokerServer
    deks: DekProvider
    backends: dict[str, KmsBackend]
    security: Security | None = None
    local_keys: LocalKeys | None = None
    keys: Mapping[str, KeyConfig] = field(default_factory=dict)
    _watch: asyncio.Task[None] | None = None
    prober: BackendProber | None = None

    async def start(self) -> None:
        """Bind and serve; follow a shared key store's changes."""
        await self.server.start()
        if self.security is not None:
            await self.security.start()
        if self.local_keys is not None and self.local_keys.shared is not None:
            await self.server.set_health(KEYSTORE_HEALTH, serving=True)
            watch = self.local_keys.watch(self._key_changed, self._store_state)
            self._watch = asyncio.create_task(watch, name="keystore-watch")
        if self.prober is not None:
            await self.prober.start(self.server.set_health)

    def _key_changed(self, local_name: str) -> None:
        """Another daemon changed a local key: drop every DEK cached under it."""
        uri = f"{LOCAL_SCHEME}://{local_name}"
        for kc in self.keys.values():
            if uri in (kc.uri, *kc.also_wrap):
                self.deks.invalidate(kc.name, decrypt_too=True)

    async def _store_state(self, available: bool) -> None:  # noqa: FBT001 - a callback
        await self.server.set_health(KEYSTORE_HEALTH, serving=available)

    async def stop(self, grace: float) -> None:
        """Drain calls, remove sockets, close backends and the key store."""
        if self.prober is not None:
            await self.prober.stop()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.server.stop(grace)
        for backend in self.backends.values():
            await backend.close()
        if self.security is not None:
            await self.security.stop()
        if self.local_keys is not None:
            self.local_keys.close()


class _BackendPool:
    """One backend instance per backend kind, created when a key first needs it."""

    def __init__(self, cfg: Config, local_keys: LocalKeys) -> None:
        self._cfg = cfg
        self._local_keys = local_keys
        self.local: LocalBackend | None = None
        self.all: dict[str, KmsBackend] = {}

    def member(self, kc: KeyConfig, uri: str) -> tuple[KmsBackend, str]:
        """The backend and backend key id for one URI of a logical key."""
        scheme, _, key_id = uri.partition("://")
        if scheme == LOCAL_SCHEME:
            if self.local is None:
                self.local = LocalBackend(self._local_keys.keyring())
                self.all[LOCAL_SCHEME] = self.local
            _ensure_local(self.local, kc, key_id)
            return self.local, key_id
        if scheme not in self.all:
            self.all[scheme] = build_remote_backend(scheme, self._cfg.backends)
        return self.all[scheme], key_id


def _resolve(
    cfg: Config, local_keys: LocalKeys
) -> tuple[dict[str, ResolvedKey], dict[str, KmsBackend]]:
    """Bind each logical key to its backend; `also_wrap` keys get a multi-wrap backend."""
    pool = _BackendPool(cfg, local_keys)
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


def build_app(cfg: Config) -> App:
    """Wire a configuration from validated_config (so already checked) into a daemon."""
    metrics = serve_metrics(cfg.metrics.listen) if cfg.metrics.listen else None
    local_keys = LocalKeys(cfg)
    keys, backends = _resolve(cfg, local_keys)
    c = cfg.cache
    deks = DekProvider(
        DekLimits(
            enabled=c.enabled,
            decrypt_max_entries=c.decrypt_max_entries,
            decrypt_ttl_seconds=c.decrypt_ttl_seconds,
            decrypt_stale_seconds=c.decrypt_stale_seconds,
            encrypt_max_age_seconds=c.encrypt_max_age_seconds,
            encrypt_max_messages=c.encrypt_max_messages,
            encrypt_max_bytes=c.encrypt_max_bytes,
        )
    )
    registry = KeyRegistry(keys)
    security = build_security(cfg, local_keys.root_key)
    authz = security.authorizer
    limits = EnvelopeLimits(
        max_plaintext_bytes=cfg.server.max_plaintext_bytes,
        max_batch_items=cfg.server.max_batch_items,
        lease_ttl_seconds=c.lease_ttl_seconds,
        lease_max_messages=c.lease_max_messages,
        lease_max_bytes=c.lease_max_bytes,
    )
    envelope = EnvelopeService(registry, deks, authz, limits, audit=security.observer)
    services = [
        envelope_spec(envelope),
        key_admin_spec(KeyAdminService(registry, deks, authz)),
        *crypto_services(cfg, registry, authz, security.observer),
    ]
    server = BrokerServer(
        services,
        security.listeners,
        max_plaintext_bytes=cfg.server.max_plaintext_bytes,
        limits=CallLimits(
            max_concurrent_rpcs=cfg.server.max_concurrent_rpcs,
            max_streams_per_connection=cfg.server.max_streams_per_connection,
            first_message_seconds=cfg.server.first_message_seconds,
            stream_idle_seconds=cfg.server.stream_idle_seconds,
            max_inflight_per_caller=cfg.server.max_inflight_per_caller,
            request_memory_bytes=cfg.server.request_memory_bytes,
        ),
        observer=security.observer,
    )
    prober = prober_for(backends, cfg.keys.values(), cfg.health)
    if metrics is not None:
        metrics.register(BrokerCollector(server.metrics, deks, backends))
        if prober is not None:
            metrics.register(BackendHealthCollector(prober))
        metrics.register(security.collector())
        metrics.register(KeyStoreCollector(local_keys))
    return App(server, deks, backends, security, local_keys, cfg.keys, prober=prober)


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
