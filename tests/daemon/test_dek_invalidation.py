"""Changing one key version drops only that key's cached DEKs, counted in KMS unwrap calls."""

from __future__ import annotations

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

KEYS = """
[keys.a]
uri = "local://a"
[keys.b]
uri = "local://b"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A dev daemon serving the envelope keys `a` and `b` on the local backend."""
    config = tmp_path / "keys.toml"
    config.write_text(KEYS)
    d = Daemon(tmp_path / "state", config=config).start()
    try:
        yield d
    finally:
        d.close()


def _unwraps(d: Daemon) -> float:
    return d.metric("keybroker_kms_calls_total", op="unwrap")


def _seal(d: Daemon, key: str, plaintext: bytes) -> bytes:
    return d.envelope.Encrypt(pb.EncryptRequest(key=key, plaintext=plaintext)).ciphertext


def _open(d: Daemon, ciphertext: bytes) -> bytes:
    return d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ciphertext)).plaintext


def _disable(d: Daemon, key: str, version: int) -> None:
    state = admin_pb.KEY_VERSION_STATE_DISABLED
    d.admin.UpdateKeyVersion(
        admin_pb.UpdateKeyVersionRequest(key=key, version=version, state=state)
    )


class TestDisablingOneVersion:
    """UpdateKeyVersion forgets the DEKs of the named key version, and no other."""

    def test_other_keys_and_versions_stay_cached(self, daemon):
        """After disabling a's v1, b and a's v2 open from the cache; a's v1 is refused."""
        a1 = _seal(daemon, "a", b"a one")
        daemon.admin.RotateKey(admin_pb.RotateKeyRequest(key="a"))
        a2, b1 = _seal(daemon, "a", b"a two"), _seal(daemon, "b", b"b one")
        assert [_open(daemon, ct) for ct in (a1, a2, b1)] == [b"a one", b"a two", b"b one"]
        assert _unwraps(daemon) == 0, "envelopes this daemon sealed open from its cache"
        _disable(daemon, "a", 1)
        assert _open(daemon, b1) == b"b one"
        assert _unwraps(daemon) == 0, "another key's DEKs were dropped"
        assert _open(daemon, a2) == b"a two"
        assert _unwraps(daemon) == 0, "another version's DEKs were dropped"
        assert_fails(
            daemon.envelope.Decrypt,
            pb.DecryptRequest(ciphertext=a1),
            grpc.StatusCode.FAILED_PRECONDITION,
            "KEY_STATE",
        )
