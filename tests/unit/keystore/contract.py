"""The behaviour every `KeyStore` owes the keyring, as a reusable test class.

Subclass `KeyStoreContract` in a module whose name starts with `test_`, with a name that
starts with `Test`, and provide three fixtures (as methods of the subclass or module-level):

* `store`: an open, empty store (the fixture closes it);
* `reopen`: a callable returning a new store object over the same storage, as a restarted
  daemon (or another daemon of the fleet) would open it (the fixture closes what it made);
* `failing_writes`: a callable returning a context manager inside which the storage refuses
  writes as a full disk does.

A test a store cannot pass for a documented reason is overridden in the subclass with a
docstring giving that reason, never skipped silently.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from broker.errors import ConfigError, KeyStoreReadOnlyError
from broker.keystore.base import StoredKey, StoredVersion

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from broker.keystore.base import KeyStore

    Reopen = Callable[[], KeyStore]
    FailingWrites = Callable[[], AbstractContextManager[None]]

CHECK = "a1" * 32
OTHER_CHECK = "b2" * 32
KEY = "payments"
TYPE = "aes-256-gcm"


class Recorder:
    """A sealer that records the version numbers it was asked for; material names its tag."""

    def __init__(self, tag: bytes) -> None:
        """Material from this sealer starts with `tag` (and a zero byte: binary survives)."""
        self.tag = tag
        self.calls: list[int] = []

    def __call__(self, version: int) -> bytes:
        """Sealed bytes for `version`."""
        self.calls.append(version)
        return self.material(version)

    def material(self, version: int) -> bytes:
        """What this sealer returns for `version`."""
        return b"\x00" + self.tag + version.to_bytes(4, "big") + bytes(range(256))


def failing_sealer(version: int) -> bytes:
    """A sealer that fails, as sealing under a root key that went away would."""
    msg = f"sealing version {version} failed"
    raise RuntimeError(msg)


class KeyStoreContract:
    """Round trips, first writer wins, numbering, states, failed commits, root binding, changes."""

    def test_a_created_key_loads_back_as_committed(self, store: KeyStore, reopen: Reopen) -> None:
        """A new key has version 1, enabled and current, with its sealed bytes intact."""
        before = datetime.now(UTC)
        seal = Recorder(b"first")
        key = store.create_key(KEY, TYPE, seal)
        assert (key.name, key.key_type, key.current, seal.calls) == (KEY, TYPE, 1, [1])
        version = key.versions[1]
        assert (version.version, version.state, version.sealed) == (1, "enabled", seal.material(1))
        slack = timedelta(seconds=1)
        assert before - slack <= version.created <= datetime.now(UTC) + slack
        assert store.load().keys == {KEY: key}
        assert reopen().load().keys == {KEY: key}

    def test_creating_an_existing_name_returns_the_existing_key(
        self, store: KeyStore, reopen: Reopen
    ) -> None:
        """The first writer wins: the second create seals nothing and gets the first key."""
        first = store.create_key(KEY, TYPE, Recorder(b"first"))
        second_seal = Recorder(b"second")
        for view in (store, reopen()):
            again = view.create_key(KEY, "hmac-sha256", second_seal)
            assert again == first
        assert second_seal.calls == []
        assert reopen().load().keys == {KEY: first}

    def test_new_versions_are_numbered_one_above_the_highest(
        self, store: KeyStore, reopen: Reopen
    ) -> None:
        """Each rotation adds the next number, makes it current and keeps every older version."""
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        seals = [Recorder(b"v2"), Recorder(b"v3")]
        second = store.add_version(KEY, expected_current=1, seal=seals[0])
        third = store.add_version(KEY, expected_current=2, seal=seals[1])
        assert [s.calls for s in seals] == [[2], [3]]
        assert (second.current, third.current) == (2, 3)
        assert sorted(third.versions) == [1, 2, 3]
        assert third.versions[2].sealed == seals[0].material(2)
        assert all(v.state == "enabled" for v in third.versions.values())
        assert reopen().load().keys[KEY] == third

    def test_a_stale_expected_current_adds_nothing(self, store: KeyStore, reopen: Reopen) -> None:
        """A rotation decided on an old view returns the key as stored, sealing nothing."""
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        rotated = store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        late = Recorder(b"late")
        for view in (store, reopen()):
            assert view.add_version(KEY, expected_current=1, seal=late) == rotated
        assert late.calls == []
        assert reopen().load().keys[KEY] == rotated

    def test_set_state_disables_and_enables_a_version(
        self, store: KeyStore, reopen: Reopen
    ) -> None:
        """A state change is durable and leaves the current version and the material alone."""
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        rotated = store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        disabled = store.set_state(KEY, 1, "disabled")
        assert disabled.versions[1].state == "disabled"
        assert disabled.current == 2
        assert disabled.versions[1].sealed == rotated.versions[1].sealed
        assert reopen().load().keys[KEY] == disabled
        enabled = store.set_state(KEY, 1, "enabled")
        assert enabled == rotated
        assert reopen().load().keys[KEY] == rotated

    def test_missing_keys_and_versions_raise_key_error(self, store: KeyStore) -> None:
        """Changing a key or version that does not exist is a KeyError and creates nothing."""
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        before = store.load()
        with pytest.raises(KeyError):
            store.add_version("missing", expected_current=1, seal=Recorder(b"x"))
        with pytest.raises(KeyError):
            store.set_state("missing", 1, "disabled")
        with pytest.raises(KeyError):
            store.set_state(KEY, 7, "disabled")
        assert store.load() == before

    def test_a_sealer_that_fails_changes_nothing(self, store: KeyStore, reopen: Reopen) -> None:
        """When sealing fails inside a change, its error surfaces and nothing is committed."""
        with pytest.raises(RuntimeError, match="sealing version 1 failed"):
            store.create_key(KEY, TYPE, failing_sealer)
        assert reopen().load().keys == {}
        key = store.create_key(KEY, TYPE, Recorder(b"v1"))
        with pytest.raises(RuntimeError, match="sealing version 2 failed"):
            store.add_version(KEY, expected_current=1, seal=failing_sealer)
        assert store.load().keys == {KEY: key}
        assert reopen().load().keys == {KEY: key}

    def test_a_failed_commit_changes_nothing_and_numbers_are_never_reused(
        self, store: KeyStore, reopen: Reopen, failing_writes: FailingWrites
    ) -> None:
        """A refused write says no change was made, and leaves the store exactly as it was.

        Afterwards numbering continues above every committed version, disabled ones included,
        and no committed material is ever replaced.
        """
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        before = store.set_state(KEY, 2, "disabled")
        snapshot = store.load()
        with failing_writes():
            with pytest.raises(KeyStoreReadOnlyError) as refused:
                store.add_version(KEY, expected_current=2, seal=Recorder(b"lost"))
            with pytest.raises(KeyStoreReadOnlyError):
                store.set_state(KEY, 1, "disabled")
        assert refused.value.message.endswith("; no change was made")
        assert store.load() == snapshot
        assert reopen().load() == snapshot
        kept = Recorder(b"v3")
        after = store.add_version(KEY, expected_current=2, seal=kept)
        assert kept.calls == [3]
        assert sorted(after.versions) == [1, 2, 3]
        assert after.versions[2] == before.versions[2]
        assert reopen().load().keys[KEY] == after

    def test_a_put_key_is_stored_whole_unless_the_name_exists(
        self, store: KeyStore, reopen: Reopen
    ) -> None:
        """A copied key keeps its versions, states, creation times and current version."""
        created = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
        versions = {
            n: StoredVersion(
                n, "disabled" if n == 1 else "enabled", created, Recorder(b"c").material(n)
            )
            for n in (1, 2, 4)
        }
        copied = StoredKey(KEY, TYPE, 4, versions)
        revision = store.load().revision
        assert store.put_key(copied) == copied
        assert store.load().revision > revision
        assert reopen().load().keys == {KEY: copied}
        other = StoredKey(KEY, "hmac-sha256", 1, {1: replace(versions[1], state="enabled")})
        assert store.put_key(other) == copied
        assert reopen().load().keys == {KEY: copied}
        rotated = store.add_version(KEY, expected_current=4, seal=Recorder(b"v5"))
        assert sorted(rotated.versions) == [1, 2, 4, 5]

    def test_bind_root_keeps_the_first_check_value(self, store: KeyStore, reopen: Reopen) -> None:
        """The first root key's check value binds the store; another root key is refused."""
        store.bind_root(CHECK)
        store.bind_root(CHECK)
        for view in (store, reopen()):
            with pytest.raises(ConfigError) as refused:
                view.bind_root(OTHER_CHECK)
            assert "was created with" in str(refused.value)
            assert view.where() in str(refused.value)
            assert "\n" not in str(refused.value)
            assert OTHER_CHECK not in str(refused.value)
            assert CHECK not in str(refused.value)
            view.bind_root(CHECK)

    def test_the_revision_grows_with_every_change_and_only_then(self, store: KeyStore) -> None:
        """Each committed key change raises the revision; a change that changes nothing does not."""
        revisions = [store.load().revision]
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        revisions.append(store.load().revision)
        store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        revisions.append(store.load().revision)
        store.set_state(KEY, 1, "disabled")
        revisions.append(store.load().revision)
        assert revisions == sorted(set(revisions))
        store.create_key(KEY, TYPE, Recorder(b"again"))
        store.add_version(KEY, expected_current=1, seal=Recorder(b"stale"))
        store.set_state(KEY, 1, "disabled")
        assert store.load().revision == revisions[-1]

    def test_changes_after_the_latest_revision_are_none(self, store: KeyStore) -> None:
        """Asking for changes past what was loaded finds none when nothing else was committed."""
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        assert store.changes(store.load().revision) is None

    def test_changes_since_a_revision_are_the_keys_changed_after_it(self, store: KeyStore) -> None:
        """`changes(r)` has exactly the keys changed after r, as committed, and the new revision."""
        store.create_key("unchanged", TYPE, Recorder(b"u1"))
        since = store.load().revision
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        rotated = store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        changed = store.changes(since)
        assert changed is not None
        assert changed.keys == {KEY: rotated}
        assert changed.revision == store.load().revision > since

    def test_a_fresh_store_object_sees_what_another_committed(
        self, store: KeyStore, reopen: Reopen
    ) -> None:
        """Everything committed is there for the next daemon: keys, versions, states, revision."""
        store.bind_root(CHECK)
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        store.create_key("signing", "ecdsa-p384", Recorder(b"s1"))
        store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        store.set_state(KEY, 1, "disabled")
        assert reopen().load() == store.load()

    def test_concurrent_rotations_through_one_store_make_one_version(self, store: KeyStore) -> None:
        """Threads rotating from the same view at once make exactly one new version."""
        store.create_key(KEY, TYPE, Recorder(b"v1"))
        start = threading.Barrier(6)
        results = []

        def rotate() -> None:
            start.wait()
            results.append(store.add_version(KEY, expected_current=1, seal=Recorder(b"t")))

        threads = [threading.Thread(target=rotate) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(results) == 6
        assert {r.current for r in results} == {2}
        assert sorted(store.load().keys[KEY].versions) == [1, 2]
