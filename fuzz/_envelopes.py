"""The envelope use case the envelope harnesses drive: real keyring, real backend, real caches.

Import it inside `instrumented()`, so the broker modules it loads are instrumented too.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from broker.core.context import canonical_context
from broker.core.stream import StreamEncryptor
from broker.core.wire import DEFAULT_SEGMENT_SIZE, FORMAT_STREAM
from broker.kms.local.backend import LocalBackend
from broker.kms.local.keyring import Keyring
from broker.policy.authorizer import Caller, SocketAccessAuthorizer
from broker.services.deks import DekLimits, DekProvider
from broker.services.envelope import EnvelopeLimits, EnvelopeService
from broker.services.keys import KeyRegistry, ResolvedKey

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["CALLER", "CONTEXTS", "Envelopes"]

CALLER = Caller(kind="listener", name="listener:fuzz")
# The contexts a caller presents; an input's option byte picks one, and each seed picks the
# one it was sealed with. The last is never sealed with.
CONTEXTS: tuple[Mapping[str, str], ...] = (
    {},
    {"tenant": "acme"},
    {"tenant": "acme", "table": "orders"},
    {"tenant": "other"},
)
# (name, purpose, keyring type): two envelope keys, and one of another purpose a header may name
_KEYS = (
    ("default", "envelope", "aes-256"),
    ("other", "envelope", "aes-256"),
    ("mac", "hmac", "hmac-sha256"),
)


class Envelopes:
    """EnvelopeService over a local keyring in the work dir; the policy allows every caller."""

    def __init__(self, work: Path) -> None:
        """Create the keyring and wire the use case over it.

        The keys are new on every run, so nothing an earlier run sealed (and left in the
        corpus, perhaps mutated where it is not authenticated) opens: only this run's seeds can.
        """
        keyring = Keyring.open(work / "keyring.json", os.urandom(32))
        for name, _, key_type in _KEYS:
            keyring.create(name, key_type, os.urandom(32))
        backend = LocalBackend(keyring)
        self.registry = KeyRegistry(
            {n: ResolvedKey(n, f"local://{n}", purpose, backend, n) for n, purpose, _ in _KEYS}
        )
        self.deks = DekProvider(DekLimits())
        self.service = EnvelopeService(
            self.registry, self.deks, SocketAccessAuthorizer(), EnvelopeLimits()
        )

    async def stream_envelope(
        self,
        context: Mapping[str, str],
        plaintext: bytes,
        *,
        store: bool,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> bytes:
        """A format 2 envelope of key `default`, from a fresh DEK as EncryptStream gets one.

        The segment size is the encryptor's own parameter (the RPC always uses the default):
        small segments let a small input hold several.
        """
        canonical = canonical_context(context)
        stored = canonical if store else None
        new = await self.deks.fresh(self.registry.get("default"), context, stored, FORMAT_STREAM)
        new.twin.wipe()
        encryptor = StreamEncryptor(new.data_key, new.prefix, canonical, segment_size)
        return encryptor.header() + encryptor.update(plaintext) + encryptor.finalize()
