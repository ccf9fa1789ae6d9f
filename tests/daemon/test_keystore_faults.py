"""The file key store under faults: nothing acknowledged is lost, a failed change changes nothing.

The keyring lives on its own small tmpfs (`[keystore] path`), so the tests can make exactly
that file system read-only or full while the daemon runs, as an operator's volume would be.
Mounting needs root, like the identity tests that create OS users.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import grpc
import pytest
from support.daemon import Daemon
from support.mounts import fill, mount, tmpfs
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


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the keyring."""
    with tmpfs(tmp_path / "keys", "2m") as mount_point:
        yield mount_point


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
        mount("-o", "remount,ro", str(volume))
        _refused_changes(daemon, "read-only")
        _decrypts(daemon, envelopes)
        mount("-o", "remount,rw", str(volume))
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
        fill(filler)
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
        mount("--bind", str(keyring), str(keyring))
        try:
            mount("-o", "remount,bind,ro", str(keyring))
            _refused_changes(daemon, "mount point")
        finally:
            subprocess.run(["umount", str(keyring)], check=True)
        assert _rotate(daemon).current_version == 3
        daemon.stop()
        daemon.start()
        _decrypts(daemon, envelopes)
        assert _describe(daemon).current_version == 3
