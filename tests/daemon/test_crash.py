"""SIGKILL while keys rotate and envelopes are made: nothing acknowledged is ever lost.

Each round starts the daemon on the same state dir, lets one client thread rotate the key and
another encrypt without pause, kills the daemon with SIGKILL at a random moment, then checks on
the next start that every envelope the daemon returned still decrypts. Between rounds the test
opens the keyring itself and fingerprints every version's material: a version number, once
seen, must always name the same material.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time

import grpc
from support.daemon import Daemon

from broker.kms.local.keyring import Keyring, load_root_key
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc, key_admin_pb2_grpc
from broker.rpc.gen import key_admin_pb2 as admin_pb

ROUNDS = 12


def _busy(d: Daemon, stop: threading.Event, envelopes: dict[bytes, bytes]) -> None:
    """Encrypt as fast as possible, keeping every envelope the daemon acknowledged.

    A plain channel: these filler plaintexts are load, not secrets for the log scan.
    """
    n = 0
    with grpc.insecure_channel(f"unix:{d.socket}") as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        while not stop.is_set():
            plaintext = f"message {n} {random.random()}".encode()  # noqa: S311 - test data
            n += 1
            try:
                reply = stub.Encrypt(pb.EncryptRequest(key="default", plaintext=plaintext))
            except grpc.RpcError:
                return
            envelopes[plaintext] = reply.ciphertext


def _rotating(d: Daemon, stop: threading.Event) -> None:
    with grpc.insecure_channel(f"unix:{d.socket}") as channel:
        stub = key_admin_pb2_grpc.KeyAdminServiceStub(channel)
        while not stop.is_set():
            try:
                stub.RotateKey(admin_pb.RotateKeyRequest(key="default"))
            except grpc.RpcError:
                return


def _fingerprints(d: Daemon) -> dict[int, str]:
    """Version -> SHA-256 of its material, read from the keyring file with the root key."""
    root = load_root_key(d.state_dir, None)
    ring = Keyring.open(d.state_dir / "keyring.json", root)
    out = {}
    for meta in ring.versions("default"):
        material = ring.material("default", meta.version)
        assert material is not None
        out[meta.version] = hashlib.sha256(material).hexdigest()
    return out


def _all_decrypt(d: Daemon, envelopes: dict[bytes, bytes]) -> None:
    with grpc.insecure_channel(f"unix:{d.socket}") as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        for plaintext, ciphertext in envelopes.items():
            assert stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext)).plaintext == plaintext


class TestSigkill:
    """Repeated SIGKILL under rotation and encryption load."""

    def test_nothing_acknowledged_is_lost(self, tmp_path):
        """After each of 12 kills every returned envelope decrypts; versions keep their material."""
        d = Daemon(tmp_path / "state")
        envelopes: dict[bytes, bytes] = {}
        seen: dict[int, str] = {}
        try:
            for _ in range(ROUNDS):
                d.start()
                _all_decrypt(d, envelopes)
                stop = threading.Event()
                workers = [
                    threading.Thread(target=_busy, args=(d, stop, envelopes)),
                    threading.Thread(target=_rotating, args=(d, stop)),
                ]
                for w in workers:
                    w.start()
                time.sleep(random.uniform(0.2, 0.8))  # noqa: S311 - a random moment
                d.kill()
                stop.set()
                for w in workers:
                    w.join(10)
                d.stop()
                current = _fingerprints(d)
                for version, fingerprint in seen.items():
                    assert current.get(version) == fingerprint, version
                seen.update(current)
            assert len(seen) > ROUNDS, "the key rotated during the rounds"
            assert len(envelopes) > ROUNDS * 10
        finally:
            d.kill()
