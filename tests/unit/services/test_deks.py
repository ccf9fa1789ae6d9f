from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs
from unit.services.fakes import resolved, settle

from broker.core.context import canonical_context
from broker.core.wire import FORMAT_V1, open_v1, parse_envelope, seal_v1
from broker.errors import (
    KeyStateError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
)
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


class TestStaleWindow:
    """decrypt_stale_seconds: a DEK past its TTL serves only while its KMS is unavailable."""

    @pytest.fixture
    def stale_deks(self, fakes):
        """A provider with a 60 s TTL and a 300 s stale window."""
        return provider(fakes, decrypt_ttl_seconds=60, decrypt_stale_seconds=300)

    async def test_serves_the_stale_dek_when_the_kms_is_down(self, fakes, stale_deks, key):
        """Past the TTL the KMS is asked first; when it is down the cached DEK still opens."""
        header, body = await envelope(stale_deks, key, TENANT, b"payload")
        await stale_deks.for_decrypt(key, header, TENANT)
        fakes.clock.advance(61)
        fakes.kms.down = True
        dk = await stale_deks.for_decrypt(key, header, TENANT)
        assert open_v1(dk, header, body, canonical_context(TENANT)) == b"payload"
        assert fakes.kms.calls["unwrap"] == 2
        assert stale_deks.stats().decrypt_stale == 1

    async def test_kms_up_refreshes_instead(self, fakes, stale_deks, key):
        """Past the TTL with the KMS up, the DEK is unwrapped again and nothing is stale."""
        header, _ = await envelope(stale_deks, key)
        await stale_deks.for_decrypt(key, header, {})
        fakes.clock.advance(61)
        await stale_deks.for_decrypt(key, header, {})
        assert fakes.kms.calls["unwrap"] == 2
        assert stale_deks.stats().decrypt_stale == 0

    @pytest.mark.parametrize(
        "error", [KmsInvalidCiphertextError, KmsKeyNotFoundError, KeyStateError]
    )
    async def test_an_answer_is_never_overridden(self, fakes, stale_deks, key, monkeypatch, error):
        """Not found, invalid ciphertext or a disabled version stand, whatever is cached."""
        header, _ = await envelope(stale_deks, key)
        await stale_deks.for_decrypt(key, header, {})
        fakes.clock.advance(61)

        async def refuse(*_args):
            raise error

        monkeypatch.setattr(fakes.kms, "unwrap", refuse)
        with pytest.raises(error):
            await stale_deks.for_decrypt(key, header, {})
        assert stale_deks.stats().decrypt_stale == 0

    @pytest.mark.parametrize(
        ("limits", "elapsed"),
        [
            pytest.param({"decrypt_ttl_seconds": 60}, 61, id="off-by-default"),
            pytest.param(
                {"decrypt_ttl_seconds": 60, "decrypt_stale_seconds": 300}, 360, id="window-over"
            ),
        ],
    )
    async def test_unavailable_stands_without_a_window(self, fakes, key, limits, elapsed):
        """With no window, or once it has passed, the outage reaches the caller."""
        deks = provider(fakes, **limits)
        header, _ = await envelope(deks, key)
        await deks.for_decrypt(key, header, {})
        fakes.clock.advance(elapsed)
        fakes.kms.down = True
        with pytest.raises(KmsUnavailableError):
            await deks.for_decrypt(key, header, {})

    async def test_one_warning_per_outage(self, fakes, stale_deks, key):
        """Many stale serves log one warning; the KMS answering ends the outage."""
        header, _ = await envelope(stale_deks, key)
        await stale_deks.for_decrypt(key, header, {})
        fakes.clock.advance(61)
        fakes.kms.down = True
        with capture_logs() as logs:
            for _ in range(5):
                await stale_deks.for_decrypt(key, header, {})
            fakes.kms.down = False
            await stale_deks.for_decrypt(key, header, {})
            fakes.clock.advance(61)
            fakes.kms.down = True
            await stale_deks.for_decrypt(key, header, {})
        events = [(e["event"], e["log_level"]) for e in logs]
        assert events == [
            ("dek_cache_serving_stale", "warning"),
            ("dek_cache_stale_ended", "info"),
            ("dek_cache_serving_stale", "warning"),
        ]
        assert logs[1]["stale_served"] == 5
        assert stale_deks.stats().decrypt_stale == 6


class TestInvalidateDecryptSide:
    """invalidate(decrypt_too=True) drops one key's DEKs, or one version's, and no other."""

    async def _cached(self, deks, *keys):
        """One envelope header per key, each DEK unwrapped once into the cache."""
        headers = [(await envelope(deks, k))[0] for k in keys]
        for k, header in zip(keys, headers, strict=True):
            await deks.for_decrypt(k, header, {})
        return headers

    async def test_other_keys_stay_cached(self, fakes, deks, key):
        """Dropping `default` leaves `payments` cached."""
        other = resolved("payments", fakes.kms, "envelope")
        mine, theirs = await self._cached(deks, key, other)
        deks.invalidate("default", decrypt_too=True)
        await deks.for_decrypt(other, theirs, {})
        assert fakes.kms.calls["unwrap"] == 2
        await deks.for_decrypt(key, mine, {})
        assert fakes.kms.calls["unwrap"] == 3

    async def test_a_named_version_drops_only_that_version(self, fakes, deks, key):
        """Dropping version 1 of `default` keeps its version 2 and every other key cached."""
        other = resolved("payments", fakes.kms, "envelope")
        v1, theirs = await self._cached(deks, key, other)
        await fakes.kms.rotate_key(key.key_id)
        (v2,) = await self._cached(deks, key)
        assert (v1.key_version, v2.key_version) == (1, 2)
        deks.invalidate("default", decrypt_too=True, version=1)
        for k, header in ((key, v2), (other, theirs)):
            await deks.for_decrypt(k, header, {})
        assert fakes.kms.calls["unwrap"] == 3
        await deks.for_decrypt(key, v1, {})
        assert fakes.kms.calls["unwrap"] == 4
