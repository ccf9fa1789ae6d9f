"""The file key store: the shared contract, and the faults only a file on a disk can suffer."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from unit.keystore.contract import KEY, TYPE, KeyStoreContract, Recorder

from broker.errors import ConfigError, KeyStoreReadOnlyError
from broker.keystore.file import FileKeyStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from broker.keystore.base import KeyStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the keyring lives."""
    return tmp_path / "keyring.json"


class Fault(NamedTuple):
    """An os function failing with `code` (for calls whose last argument ends with `only`)."""

    function: str
    code: int
    only: str | None
    said: str


def _refuse(code: int, *, only: Callable[..., bool] = lambda *_: True) -> Callable[..., Any]:
    """A stand-in for an os function that fails with `code` whenever `only(args)` holds."""

    def fail(*args: Any, real: Callable[..., Any]) -> Any:
        if only(*args):
            raise OSError(code, os.strerror(code))
        return real(*args)

    return fail


def _patch(monkeypatch: pytest.MonkeyPatch, name: str, fail: Callable[..., Any]) -> None:
    """Replace os.`name` by `fail`, which may still call the real function."""
    real = getattr(os, name)
    monkeypatch.setattr(os, name, lambda *args: fail(*args, real=real))


def _rotated_keyring(path: Path) -> FileKeyStore:
    """A keyring with two generations on disk (so keyring.json.prev exists)."""
    store = FileKeyStore.open(path)
    store.create_key(KEY, TYPE, Recorder(b"v1"))
    store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
    return store


class TestFileKeyStoreContract(KeyStoreContract):
    """The contract against a keyring file in a temporary directory."""

    @pytest.fixture
    def store(self, path: Path) -> Iterator[KeyStore]:
        """An empty keyring."""
        store = FileKeyStore.open(path)
        yield store
        store.close()

    @pytest.fixture
    def reopen(self, path: Path) -> Iterator[Callable[[], KeyStore]]:
        """The same file opened again, as after a restart."""
        opened: list[FileKeyStore] = []

        def again() -> KeyStore:
            opened.append(FileKeyStore.open(path))
            return opened[-1]

        yield again
        for store in opened:
            store.close()

    @pytest.fixture
    def failing_writes(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> Callable[[], contextlib.AbstractContextManager[None]]:
        """Every fsync fails with ENOSPC, as on a full disk."""

        @contextlib.contextmanager
        def full_disk() -> Iterator[None]:
            with monkeypatch.context() as patch:
                _patch(patch, "fsync", _refuse(errno.ENOSPC))
                yield

        return full_disk


class TestFileKeyStore:
    """What only a keyring file can suffer: damage, crash leftovers and refused writes."""

    def test_a_damaged_keyring_is_refused_naming_the_previous_generation(self, path: Path) -> None:
        """Open refuses a damaged file in one line that says where the last good one is."""
        _rotated_keyring(path)
        path.write_text('{"format": 1, "keys": {', encoding="utf-8")
        with pytest.raises(ConfigError) as refused:
            FileKeyStore.open(path)
        message = str(refused.value)
        assert "\n" not in message
        assert f"{path}.prev" in message

    def test_the_previous_generation_opens_after_the_move_the_message_names(
        self, path: Path
    ) -> None:
        """Moving keyring.json.prev into place recovers the keys of the generation before."""
        store = FileKeyStore.open(path)
        first = store.create_key(KEY, TYPE, Recorder(b"v1"))
        store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        path.write_bytes(b"\x00garbage")
        path.with_name("keyring.json.prev").replace(path)
        assert FileKeyStore.open(path).load().keys == {KEY: first}

    def test_leftover_temp_files_are_removed_at_open(self, path: Path) -> None:
        """Temp files a crash left beside the keyring go; the keyring and .prev stay."""
        _rotated_keyring(path)
        leftovers = [
            path.with_name(".keyring.json.x1y2z3"),
            path.with_name(".keyring.json.prev-link"),
        ]
        for leftover in leftovers:
            leftover.write_bytes(b"partial")
        keys = FileKeyStore.open(path).load().keys
        assert not any(leftover.exists() for leftover in leftovers)
        assert path.exists()
        assert path.with_name("keyring.json.prev").exists()
        assert sorted(keys[KEY].versions) == [1, 2]

    @pytest.mark.parametrize(
        "fault",
        [
            Fault("fsync", errno.ENOSPC, None, "the key store's disk is full"),
            Fault("replace", errno.EROFS, None, "the key store's file system is read-only"),
            Fault("replace", errno.ENOSPC, "keyring.json", "the key store's disk is full"),
        ],
        ids=["fsync-enospc", "first-rename-erofs", "rename-over-keyring-enospc"],
    )
    def test_a_failed_write_changes_nothing(
        self, path: Path, monkeypatch: pytest.MonkeyPatch, fault: Fault
    ) -> None:
        """The keyring, its previous generation and the object's keys stay as they were."""
        store = _rotated_keyring(path)
        previous = path.with_name("keyring.json.prev")
        files = (path.read_bytes(), previous.read_bytes())
        snapshot = store.load()
        only = fault.only
        fail = _refuse(fault.code, only=lambda *args: only is None or str(args[-1]).endswith(only))
        with monkeypatch.context() as patch:
            _patch(patch, fault.function, fail)
            with pytest.raises(KeyStoreReadOnlyError) as refused:
                store.add_version(KEY, expected_current=2, seal=Recorder(b"lost"))
        assert refused.value.message == f"{fault.said}; no change was made"
        assert path.read_bytes() == files[0]
        assert store.load() == snapshot
        assert FileKeyStore.open(path).load() == snapshot
        assert previous.read_bytes() == files[1]
