"""The keyring root key of this start (part of the composition root).

Without `[keyring] master_key_uri` it is ECL_CRYPTO_LOCAL_MASTER_KEY or STATE/master.key.
With it, a backend of its own is built for the URI, used on a private event loop (this runs
while the daemon is still being wired, before anything serves) and closed again, so the
backends that serve keys are never shared with start-up code.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from broker.kms.local.keyring import load_root_key
from broker.kms.local.root import PLAIN_FILE, WRAPPED_FILE, wrapped_root_key
from broker.kms.registry import build_remote_backend

if TYPE_CHECKING:
    from broker.config.schema import Config

__all__ = ["RootKey"]

log = structlog.get_logger("keybroker")


class RootKey:
    """The root key of the local keyring and the audit chain, fetched once on first use."""

    def __init__(self, cfg: Config) -> None:
        """Nothing is read (and no KMS is called) until a component asks for the key."""
        self._cfg = cfg
        self._key: bytes | None = None

    def __call__(self) -> bytes:
        """The 256-bit root key."""
        if self._key is None:
            self._key = _load(self._cfg)
        return self._key


def _load(cfg: Config) -> bytes:
    """Read master.key (or the env key), or unwrap master.key.wrapped with its KMS key."""
    state = cfg.server.state_dir
    if not state.exists():
        state.mkdir(mode=0o750, parents=True)
    uri = cfg.keyring.master_key_uri
    if not uri:
        return load_root_key(state, cfg.local.master_key_hex)
    with ThreadPoolExecutor(1, thread_name_prefix="keyring-root") as pool:
        return pool.submit(asyncio.run, _unwrap(cfg)).result()


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
