"""The file key store under faults: nothing acknowledged is lost, a failed change changes nothing.

The keyring lives on its own small tmpfs (`[keystore] path`), so the tests can make exactly
that file system read-only or full while the daemon runs, as an operator's volume would be.
Mounting needs root, like the identity tests that create OS users.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import TYPE_CHECKING

import grpc
import pytest
from support.daemon import Daemon
from support.rpc import assert_fails

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import key_admin_pb2 as admin_pb

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

READ_ONLY = "KEYSTORE_READ_ONLY"
NO_CHANGE = "no change was made"
CONFIG = """
[keystore]
kind = "file"
path = "{path}"
"""


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the keyring, unmounted at the end whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("the key store fault tests mount file systems: run them as root (CI does)")
    mount_point = tmp_path / "keys"
    mount_point.mkdir()
    _mount("-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-R", str(mount_point)], check=True, capture_output=True)


@pytest.fixture
def daemon(tmp_path: Path, volume: Path) -> Iterator[Daemon]:
    """A dev daemon whose keyring is on the test volume."""
    config = tmp_path / "keybroker.toml"
    config.write_text(CONFIG.format(path=volume / "keyring.json"))
    d = Daemon(tmp_path / "state", config=config)
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def _encrypt(d: Daemon, text: bytes) -> pb.EncryptResponse:
    return d.envelope.Encrypt(pb.EncryptRequest(key="default", plaintext=text))


def _describe(d: Daemon) -> admin_pb.Key:
    return d.admin.DescribeKey(admin_pb.DescribeKeyRequest(key="default")).key


def _rotate(d: Daemon) -> admin_pb.Key:
    return d.admin.RotateKey(admin_pb.RotateKeyRequest(key="default")).key


def _disable(version: int) -> admin_pb.UpdateKeyVersionRequest:
    state = admin_pb.KEY_VERSION_STATE_DISABLED
    return admin_pb.UpdateKeyVersionRequest(key="default", version=version, state=state)


def _decrypts(d: Daemon, envelopes: dict[bytes, bytes]) -> None:
    for plaintext, ciphertext in envelopes.items():
        reply = d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ciphertext))
        assert reply.plaintext == plaintext


def _refused_changes(d: Daemon, cause: str) -> None:
    """Rotate and disabling version 1 both fail naming the cause; the key is exactly as before."""
    before = _describe(d)
    exc = assert_fails(
        d.admin.RotateKey,
        admin_pb.RotateKeyRequest(key="default"),
        grpc.StatusCode.FAILED_PRECONDITION,
        READ_ONLY,
        NO_CHANGE,
    )
    assert cause in (exc.details() or "")
    assert_fails(
        d.admin.UpdateKeyVersion,
        _disable(1),
        grpc.StatusCode.FAILED_PRECONDITION,
        READ_ONLY,
        NO_CHANGE,
    )
    assert _describe(d) == before
    assert _encrypt(d, b"after the fault").key_version == before.current_version


def _fill(path: Path) -> None:
    """Write until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 << 10, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(size))
    finally:
        os.close(fd)


def _no_temp_files(volume: Path) -> None:
    names = sorted(p.name for p in volume.iterdir())
    assert names in (["keyring.json"], ["keyring.json", "keyring.json.prev"]), names


class TestReadOnlyOrFull:
    """A store that refuses writes: FAILED_PRECONDITION, nothing changes, nothing is lost."""

    def test_read_only_file_system(self, daemon, volume):
        """The keyring's file system turns read-only; changes fail; a restart keeps every key."""
        envelopes = {b"v1": _encrypt(daemon, b"v1").ciphertext}
        assert _rotate(daemon).current_version == 2
        envelopes[b"v2"] = _encrypt(daemon, b"v2").ciphertext
        _mount("-o", "remount,ro", str(volume))
        _refused_changes(daemon, "read-only")
        _decrypts(daemon, envelopes)
        _mount("-o", "remount,rw", str(volume))
        daemon.stop()
        daemon.start()
        _decrypts(daemon, envelopes)
        assert [v.version for v in _describe(daemon).versions] == [1, 2]
        assert _rotate(daemon).current_version == 3
        _no_temp_files(volume)

    def test_full_file_system(self, daemon, volume):
        """No space left: changes fail naming the full disk; freeing space lets them succeed."""
        envelopes = {b"v1": _encrypt(daemon, b"v1").ciphertext}
        assert _rotate(daemon).current_version == 2
        filler = volume / "filler"
        _fill(filler)
        _refused_changes(daemon, "disk is full")
        filler.unlink()
        assert _rotate(daemon).current_version == 3
        daemon.stop()
        daemon.start()
        _decrypts(daemon, envelopes)
        assert _describe(daemon).current_version == 3
        _no_temp_files(volume)

    def test_read_only_keyring_file(self, daemon, volume):
        """keyring.json itself on a read-only mount: changes fail; the mount gone, they work."""
        envelopes = {b"v1": _encrypt(daemon, b"v1").ciphertext}
        assert _rotate(daemon).current_version == 2
        keyring = volume / "keyring.json"
        _mount("--bind", str(keyring), str(keyring))
        try:
            _mount("-o", "remount,bind,ro", str(keyring))
            _refused_changes(daemon, "mount point")
        finally:
            subprocess.run(["umount", str(keyring)], check=True)
        assert _rotate(daemon).current_version == 3
        daemon.stop()
        daemon.start()
        _decrypts(daemon, envelopes)
        assert _describe(daemon).current_version == 3
