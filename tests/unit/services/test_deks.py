from __future__ import annotations

import asyncio

import pytest
from unit.services.fakes import resolved, settle

from broker.core.context import canonical_context
from broker.core.wire import FORMAT_V1, open_v1, parse_envelope, seal_v1
from broker.errors import KmsUnavailableError
from broker.services.deks import DekLimits, DekProvider

TENANT = {"tenant": "acme"}


@pytest.fixture
def key(fakes):
    """The `default` envelope key on the fake KMS."""
    return resolved("default", fakes.kms, "envelope")


def provider(fakes, **limits) -> DekProvider:
    """A DEK provider on the fake clock with the given limits."""
    return DekProvider(DekLimits(**limits), clock=fakes.clock)


async def take(deks, key, context=None, nbytes=10, *, store=False):
    """An encrypt slot for one message of nbytes."""
    context = context or {}
    canonical = canonical_context(context)
    return await deks.for_encrypt(key, context, canonical, store=store, nbytes=nbytes)


async def envelope(deks, key, context=None, plaintext=b"m"):
    """A format-1 envelope under a fresh (uncached) DEK, parsed: (header, body)."""
    context = context or {}
    fresh = await deks.fresh(key, context, None, FORMAT_V1)
    return parse_envelope(
        seal_v1(fresh.data_key, fresh.prefix, plaintext, canonical_context(context))
    )


def generated(fakes) -> int:
    """DEKs the KMS has generated so far."""
    return fakes.kms.calls["generate_data_key"]


class TestEncryptReuse:
    """DekProvider.for_encrypt: one DEK per slot, replaced by exactly one KMS call at a limit."""

    async def test_one_dek_serves_many_messages(self, fakes, deks, key):
        """Ten messages under one key and context cost one KMS call."""
        slots = [await take(deks, key) for _ in range(10)]
        assert generated(fakes) == 1
        assert {s.prefix for s in slots} == {slots[0].prefix}
        stats = deks.stats()
        assert (stats.encrypt_hits, stats.encrypt_misses, stats.kms_generate_calls) == (9, 1, 1)

    async def test_max_messages(self, fakes, key):
        """The message after encrypt_max_messages makes one new KMS call, then reuse resumes."""
        deks = provider(fakes, encrypt_max_messages=3)
        calls = []
        for _ in range(6):
            await take(deks, key)
            calls.append(generated(fakes))
        assert calls == [1, 1, 1, 2, 2, 2]

    async def test_max_bytes(self, fakes, key):
        """A message that would pass encrypt_max_bytes makes one new KMS call."""
        deks = provider(fakes, encrypt_max_bytes=100)
        calls = []
        for nbytes in (60, 40, 1, 50, 49):
            await take(deks, key, nbytes=nbytes)
            calls.append(generated(fakes))
        assert calls == [1, 1, 2, 2, 2]

    async def test_max_age(self, fakes, key):
        """A DEK older than encrypt_max_age_seconds is replaced by one new KMS call."""
        deks = provider(fakes, encrypt_max_age_seconds=300)
        await take(deks, key)
        fakes.clock.advance(299.9)
        await take(deks, key)
        assert generated(fakes) == 1
        fakes.clock.advance(0.1)
        await take(deks, key)
        await take(deks, key)
        assert generated(fakes) == 2

    async def test_slots_are_per_key_context_and_store_flag(self, fakes, deks, key):
        """Another key, context or store flag never shares a DEK."""
        other = resolved("payments", fakes.kms, "envelope")
        slots = [
            await take(deks, key),
            await take(deks, key, TENANT),
            await take(deks, key, TENANT, store=True),
            await take(deks, other),
        ]
        assert len({s.prefix for s in slots}) == 4
        assert generated(fakes) == 4

    async def test_disabled_cache_calls_the_kms_every_time(self, fakes, key):
        """With the cache disabled every message gets its own DEK."""
        deks = provider(fakes, enabled=False)
        for _ in range(3):
            await take(deks, key)
        assert generated(fakes) == 3

    async def test_invalidate_retires_the_keys_slots_only(self, fakes, deks, key):
        """After invalidate(key) the next message of that key makes a KMS call; others reuse."""
        other = resolved("payments", fakes.kms, "envelope")
        await take(deks, key)
        await take(deks, other)
        deks.invalidate("default")
        await take(deks, key)
        await take(deks, other)
        assert generated(fakes) == 3


class TestDecryptCache:
    """DekProvider.for_decrypt: unwrapped DEKs are cached by wrapped DEK, within TTL and size."""

    async def test_encrypt_side_dek_is_cached_for_decrypt(self, fakes, deks, key):
        """An envelope this provider sealed opens without any unwrap."""
        slot = await take(deks, key, TENANT)
        header, body = parse_envelope(
            seal_v1(slot.data_key, slot.prefix, b"m", canonical_context(TENANT))
        )
        dk = await deks.for_decrypt(key, header, TENANT)
        assert open_v1(dk, header, body, canonical_context(TENANT)) == b"m"
        assert fakes.kms.calls["unwrap"] == 0

    async def test_hits_make_no_kms_call(self, fakes, deks, key):
        """The first decrypt unwraps; the next ones are cache hits."""
        header, _ = await envelope(deks, key)
        for _ in range(5):
            await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 1
        stats = deks.stats()
        assert (stats.decrypt_hits, stats.kms_unwrap_calls) == (4, 1)

    async def test_ttl(self, fakes, key):
        """An entry older than decrypt_ttl_seconds is unwrapped again."""
        deks = provider(fakes, decrypt_ttl_seconds=60)
        header, _ = await envelope(deks, key)
        await deks.for_decrypt(key, header, {})
        fakes.clock.advance(59)
        await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 1
        fakes.clock.advance(1)
        await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 2

    async def test_least_recently_used_entry_is_evicted(self, fakes, key):
        """Beyond decrypt_max_entries the oldest-used DEK is dropped and unwrapped again."""
        deks = provider(fakes, decrypt_max_entries=2)
        first, second, third = [(await envelope(deks, key))[0] for _ in range(3)]
        for header in (first, second, first, third, first, second):
            await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 4  # first, second, third, then second again

    async def test_disabled_cache_unwraps_every_time(self, fakes, key):
        """With the cache disabled every decrypt unwraps."""
        deks = provider(fakes, enabled=False)
        header, _ = await envelope(deks, key)
        for _ in range(3):
            await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 3

    async def test_invalidate_with_decrypt_too_forgets_cached_deks(self, fakes, deks, key):
        """invalidate(decrypt_too=True) makes the next decrypt unwrap again."""
        header, _ = await envelope(deks, key)
        await deks.for_decrypt(key, header, {})
        deks.invalidate("default")
        await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 1
        deks.invalidate("default", decrypt_too=True)
        await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 2


class TestSingleFlight:
    """DekProvider: concurrent misses for one wrapped DEK or one slot make one KMS call."""

    async def test_concurrent_decrypt_misses_unwrap_once(self, fakes, deks, key):
        """Fifty concurrent misses for one wrapped DEK make one unwrap; all get a working key."""
        header, body = await envelope(deks, key, TENANT, b"payload")
        fakes.kms.gate = asyncio.Event()
        tasks = [asyncio.create_task(deks.for_decrypt(key, header, TENANT)) for _ in range(50)]
        await settle()
        assert fakes.kms.calls["unwrap"] == 1
        fakes.kms.gate.set()
        keys = await asyncio.gather(*tasks)
        context = canonical_context(TENANT)
        assert {open_v1(dk, header, body, context) for dk in keys} == {b"payload"}
        assert fakes.kms.calls["unwrap"] == 1

    async def test_concurrent_encrypt_misses_generate_once(self, fakes, deks, key):
        """Fifty concurrent first messages for one slot make one generate call."""
        fakes.kms.gate = asyncio.Event()
        tasks = [asyncio.create_task(take(deks, key, TENANT)) for _ in range(50)]
        await settle()
        fakes.kms.gate.set()
        slots = await asyncio.gather(*tasks)
        assert generated(fakes) == 1
        assert {s.prefix for s in slots} == {slots[0].prefix}
        assert slots[0].messages == 50

    async def test_different_wrapped_deks_are_not_merged(self, fakes, deks, key):
        """Misses for two wrapped DEKs make two unwraps, however many callers."""
        headers = [(await envelope(deks, key))[0] for _ in range(2)]
        fakes.kms.gate = asyncio.Event()
        tasks = [asyncio.create_task(deks.for_decrypt(key, h, {})) for h in headers * 10]
        await settle()
        fakes.kms.gate.set()
        await asyncio.gather(*tasks)
        assert fakes.kms.calls["unwrap"] == 2

    async def test_leader_failure_reaches_every_follower_once(self, fakes, deks, key):
        """When the one unwrap fails every waiting caller gets its error; the next call retries."""
        header, _ = await envelope(deks, key)
        fakes.kms.gate = asyncio.Event()
        fakes.kms.down = True
        tasks = [asyncio.create_task(deks.for_decrypt(key, header, {})) for _ in range(20)]
        await settle()
        fakes.kms.gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert {type(o) for o in outcomes} == {KmsUnavailableError}
        assert fakes.kms.calls["unwrap"] == 1
        fakes.kms.down = False
        await deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 2
