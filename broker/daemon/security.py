"""Composition of identity, policy, rate limits and audit (part of the composition root).

app.py calls `harden` before anything else and `build_security` while wiring; everything
concrete about listeners, the policy source and the audit log is decided here.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from broker.audit.chain import Chain
from broker.audit.checkpoint import Checkpointer
from broker.audit.head import HeadStore, Resumption, resume
from broker.audit.log import AuditLog, FileSink, LineSink, StreamSink, derive_audit_key, last_line
from broker.daemon.hardening import harden
from broker.daemon.security_metrics import SecurityCollector
from broker.errors import ConfigError
from broker.policy.builtin import DEV_POLICY_TOML, SOCKET_ACCESS_POLICY
from broker.policy.engine import PolicyHolder
from broker.policy.loader import check_callers, load_policy_file
from broker.policy.ratelimit import RateLimiter
from broker.policy.source import PolicySource
from broker.rpc.audit_calls import CallAuditor, PolicyAuthorizer, SecurityCounters
from broker.transport.identity import ListenerIdentity
from broker.transport.peercred_proxy import (
    REFUSAL_REASONS,
    ConnectionLimits,
    PeercredListener,
)
from broker.transport.server import SelfBoundListener, UnixListener
from broker.transport.tls import TlsFiles, TlsListener

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from broker.config.listeners import ListenerConfig
    from broker.config.schema import Config

__all__ = ["Security", "build_security", "harden", "unix_identities"]

log = structlog.get_logger("keybroker.security")
_DEFAULT_IDENTITY = "default"  # the identity of server.socket when no [[listeners]] are given


@dataclass
class Security:
    """The built security pieces and their lifecycle."""

    authorizer: PolicyAuthorizer
    observer: CallAuditor
    listeners: list[UnixListener | SelfBoundListener]
    policy: PolicySource
    audit: AuditLog | None
    counters: SecurityCounters
    checkpoints: Checkpointer | None = None
    _watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    _checkpointing: asyncio.Task[None] | None = field(default=None, repr=False)

    def collector(self) -> SecurityCollector:
        """Prometheus collector for these pieces."""
        return SecurityCollector(
            self.counters, self.audit, lambda: dict(self.policy.reloads), self._peercred_refused
        )

    def _peercred_refused(self) -> dict[str, int]:
        """Connections the peercred listeners refused at accept, by reason, summed."""
        total: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        for listener in self.listeners:
            if isinstance(listener, PeercredListener):
                for reason, n in listener.refused.items():
                    total[reason] += n
        return total

    async def start(self) -> None:
        """Start watching the policy file and emitting audit checkpoints."""
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self.policy.watch())
        if self.checkpoints is not None:
            self._checkpointing = loop.create_task(self.checkpoints.run())

    def on_sighup(self) -> None:
        """Reload the policy and reopen the audit file (after log rotation)."""
        self.policy.reload("sighup")
        if self.audit is not None:
            try:
                self.audit.reopen()
            except OSError:
                log.exception("audit_reopen_failed")
            else:
                log.info("audit_reopened")

    async def stop(self) -> None:
        """Stop the tasks; log the head and a last checkpoint as anchors; close the audit log."""
        for task in (self._watcher, self._checkpointing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.audit is not None:
            head = self.audit.head
            if head is not None:
                log.info("audit_chain_head", seq=head.seq, mac=head.mac)
            if self.checkpoints is not None:
                self.checkpoints.stop()
            self.audit.close()


def _policy(cfg: Config) -> PolicySource:
    if cfg.policy is not None:
        path, table = cfg.policy.file, cfg.policy.table
    elif cfg.dev:
        path, table = cfg.server.state_dir / "policy.toml", None
        if not path.exists():
            path.write_text(DEV_POLICY_TOML, encoding="utf-8")
            path.chmod(0o600)
            log.info("dev_policy_written", path=str(path))
    elif any(lc.kind != "unix" for lc in cfg.listeners):
        msg = "policy: peercred and tcp listeners need a [policy] (see docs/policy.md)"
        raise ConfigError(msg)
    else:
        return PolicySource(PolicyHolder(SOCKET_ACCESS_POLICY), None)
    policy = load_policy_file(path, table)
    check_callers(policy, unix_identities(cfg.listeners))
    return PolicySource(PolicyHolder(policy), path, table)


def unix_identities(listeners: Iterable[ListenerConfig]) -> list[str]:
    """The identities of the unix listeners a start serves (`default` without listeners)."""
    configured = list(listeners)
    if not configured:
        return [_DEFAULT_IDENTITY]
    return [lc.identity for lc in configured if lc.kind == "unix"]


def _audit_log(cfg: Config, key: bytes) -> AuditLog:
    """The audit log, continuing the chain from its file and its durable head (docs/audit.md)."""
    state = cfg.server.state_dir
    path = Path(cfg.audit.file).expanduser() if cfg.audit.file else state / "audit.log"
    if not path.parent.exists():
        path.parent.mkdir(mode=0o750, parents=True)
    sinks: list[LineSink] = [FileSink(path)]
    if cfg.audit.stdout:
        sinks.append(StreamSink())
    store = HeadStore(state / "audit.head", key)
    if store.unreadable:
        log.warning("audit_head_unreadable", path=str(store.path))
    tail = last_line(path)
    file_head = Chain(key).check(tail) if tail else None
    resumed = resume(file_head, store.head, unverified_tail=bool(tail) and file_head is None)
    _report(resumed, path)
    audit = AuditLog(key, sinks, fail_closed=cfg.audit.fail_closed, head=resumed.head, store=store)
    audit.start(resumed.event)
    return audit


def _report(resumed: Resumption, path: Path) -> None:
    """Say in the daemon's log where the chain continues, and what was found missing."""
    if resumed.restarted:
        log.warning("audit_chain_restarted", file=str(path), reason=resumed.event["reason"])
    if resumed.lost is not None:
        first, last = resumed.lost
        log.warning("audit_tail_lost", file=str(path), lost_from=first, lost_to=last)
    head = resumed.head
    log.info("audit_enabled", file=str(path), seq=head.seq + 1 if head else 0)


def _audit(cfg: Config, root_key: Callable[[], bytes]) -> tuple[AuditLog, Checkpointer | None]:
    """The audit log and, unless turned off, what checkpoints its head."""
    key = derive_audit_key(root_key())
    audit = _audit_log(cfg, key)
    seconds = cfg.audit.checkpoint_seconds
    if not seconds:
        return audit, None
    file = Path(cfg.audit.checkpoint_file).expanduser() if cfg.audit.checkpoint_file else None
    return audit, Checkpointer(key, audit, file, interval=seconds)


def _listener(lc: ListenerConfig, holder: PolicyHolder) -> UnixListener | SelfBoundListener:
    if lc.kind == "tcp":
        assert lc.tls is not None  # noqa: S101 - guaranteed by the config parser
        files = TlsFiles(lc.tls.cert, lc.tls.key, lc.tls.client_ca)
        return TlsListener(lc.address, files, holder)
    assert lc.path is not None  # noqa: S101 - idem
    if lc.kind == "peercred":
        limits = ConnectionLimits(lc.max_connections, lc.max_connections_per_uid)
        return PeercredListener(
            lc.path, holder, mode=lc.mode, owner=lc.owner, group=lc.group, limits=limits
        )
    identity = ListenerIdentity(lc.identity, holder)
    return UnixListener(lc.path, identity, lc.mode, lc.owner, lc.group)


def build_security(cfg: Config, root_key: Callable[[], bytes]) -> Security:
    """Policy, audit log, authorizer and listeners; `root_key` gives the audit chain its key."""
    state = cfg.server.state_dir
    if not state.exists():
        state.mkdir(mode=0o750, parents=True)
    source = _policy(cfg)
    audit, checkpoints = _audit(cfg, root_key) if cfg.audit.enabled else (None, None)
    counters = SecurityCounters()
    holder = source.holder
    listeners: list[UnixListener | SelfBoundListener] = [
        _listener(lc, holder) for lc in cfg.listeners
    ] or [UnixListener(cfg.server.socket, ListenerIdentity(_DEFAULT_IDENTITY, holder))]
    return Security(
        authorizer=PolicyAuthorizer(holder, RateLimiter(), counters),
        observer=CallAuditor(audit),
        listeners=listeners,
        policy=source,
        audit=audit,
        counters=counters,
        checkpoints=checkpoints,
    )
