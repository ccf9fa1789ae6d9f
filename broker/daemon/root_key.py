"""The keyring root key of this start (part of the composition root).

With the file store: without `[keyring] master_key_uri` it is ECL_CRYPTO_LOCAL_MASTER_KEY or
STATE/master.key; with it, STATE/master.key.wrapped unwrapped by that KMS key. With a shared
(PostgreSQL) store every daemon must hold the same root key, so it is kept in the store,
wrapped by the KMS key `[keyring] master_key_uri` (the first daemon makes it), or given as
ECL_CRYPTO_LOCAL_MASTER_KEY for development. A KMS backend of its own is built for the URI,
used on a private event loop (this runs while the daemon is still being wired, before
anything serves) and closed again, so the backends that serve keys are never shared with
start-up code.
"""

from __future__ import annotations

import asyncio
import hmac
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from broker.errors import BrokerError, ConfigError
from broker.keystore.base import RootRecord
from broker.kms.local.keyring import load_root_key
from broker.kms.local.root import PLAIN_FILE, ROOT_CONTEXT, WRAPPED_FILE, wrapped_root_key
from broker.kms.registry import build_remote_backend

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from broker.config import Config
    from broker.keystore.base import KeyStore, SharedKeyStore
    from broker.kms.base import KmsBackend

__all__ = ["RootKey"]

log = structlog.get_logger("keybroker")
_ROOT_BYTES = 32


class RootKey:
    """The root key of the local keyring and the audit chain, fetched once on first use."""

    def __init__(self, cfg: Config, store: Callable[[], KeyStore], *, create: bool = True) -> None:
        """Nothing is read (and no KMS is called) until a component asks for the key.

        With `create=False` (verifiers, tools) a missing root key is an error, never made.
        """
        self._cfg = cfg
        self._store = store
        self._create = create
        self._key: bytes | None = None

    def __call__(self) -> bytes:
        """The 256-bit root key."""
        if self._key is None:
            if self._cfg.keystore.kind == "file":
                self._key = _load(self._cfg, create=self._create)
            else:
                store: SharedKeyStore = self._store()  # type: ignore[assignment]
                self._key = _shared(self._cfg, store, create=self._create)
        return self._key


def _on_private_loop(work: Callable[[], Coroutine[None, None, bytes]]) -> bytes:
    """Run start-up KMS work on a loop of its own, whatever loop the caller is on."""
    with ThreadPoolExecutor(1, thread_name_prefix="keyring-root") as pool:
        return pool.submit(asyncio.run, work()).result()


def _load(cfg: Config, *, create: bool) -> bytes:
    """Read master.key (or the env key), or unwrap master.key.wrapped with its KMS key."""
    state = cfg.server.state_dir
    uri = cfg.keyring.master_key_uri
    if not create and cfg.local.master_key_hex is None:
        path = state / (WRAPPED_FILE if uri else PLAIN_FILE)
        if not path.exists():
            raise ConfigError(f"{path}: no root key here; pass the daemon's --config")
    if not state.exists():
        state.mkdir(mode=0o750, parents=True)
    if not uri:
        return load_root_key(state, cfg.local.master_key_hex)
    return _on_private_loop(lambda: _unwrap(cfg))


async def _unwrap(cfg: Config) -> bytes:
    """Unwrap (or create) the root key with a backend made for this one call."""
    uri = cfg.keyring.master_key_uri
    backend = build_remote_backend(uri.partition("://")[0], cfg.backends)
    plain = cfg.server.state_dir / PLAIN_FILE
    if plain.exists():
        log.warning(
            "keyring_root_migrating",
            uri=uri,
            file=str(plain),
            note="the plain root key is wrapped under the KMS key, checked, then deleted",
        )
    try:
        key = await wrapped_root_key(cfg.server.state_dir, uri, backend)
    finally:
        await backend.close()
    log.info("keyring_root_unwrapped", uri=uri, file=str(cfg.server.state_dir / WRAPPED_FILE))
    return key


def _shared(cfg: Config, store: SharedKeyStore, *, create: bool) -> bytes:
    """The root key every daemon of a shared store holds: from the store, or from the env."""
    uri = cfg.keyring.master_key_uri
    if not uri:
        if cfg.local.master_key_hex is None:
            raise ConfigError(
                f"keystore.kind = {store.kind}: every daemon needs the same root key; set "
                "[keyring] master_key_uri (a KMS key that wraps it in the store), or "
                "ECL_CRYPTO_LOCAL_MASTER_KEY for development"
            )
        return bytes.fromhex(cfg.local.master_key_hex)
    return _on_private_loop(lambda: _shared_wrapped(cfg, store, uri, create=create))


async def _shared_wrapped(cfg: Config, store: SharedKeyStore, uri: str, *, create: bool) -> bytes:
    """Unwrap the store's root key with the KMS key, making it first when the store has none."""
    backend = build_remote_backend(uri.partition("://")[0], cfg.backends)
    try:
        return await _open_or_create_root(store, uri, backend, create=create)
    except BrokerError as exc:
        msg = f"keyring.master_key_uri: {uri} did not unwrap the shared root key: {exc.message}"
        raise ConfigError(msg) from exc
    finally:
        await backend.close()


async def _open_or_create_root(
    store: SharedKeyStore, uri: str, backend: KmsBackend, *, create: bool
) -> bytes:
    """First daemon: a KMS-made root key, of which only the wrapped form reaches the store."""
    key_id = uri.partition("://")[2]
    record = await asyncio.to_thread(store.read_root)
    if record is None and not create:
        raise ConfigError(f"{store.where()}: the store holds no root key yet; start a daemon first")
    if record is None:
        generated = await backend.generate_data_key(key_id, ROOT_CONTEXT)
        try:
            made = RootRecord(uri, generated.key_version, generated.wrapped)
            record = await asyncio.to_thread(store.create_root, made)
            if hmac.compare_digest(record.wrapped, made.wrapped):
                log.info("keystore_root_created", uri=uri, where=store.where())
                return bytes(generated.plaintext)
        finally:
            generated.wipe()
    if record.uri != uri:
        msg = (
            f"keyring.master_key_uri: the root key in {store.where()} is wrapped by "
            f"{record.uri}, not {uri}; set master_key_uri back to it"
        )
        raise ConfigError(msg)
    root = await backend.unwrap(key_id, record.key_version, record.wrapped, ROOT_CONTEXT)
    try:
        if len(root) != _ROOT_BYTES:
            raise ConfigError(f"{store.where()}: the KMS returned a root key of the wrong size")
        return bytes(root)
    finally:
        root[:] = bytes(len(root))
