"""Nothing secret in any log or audit file any test daemon wrote during the session.

The scan is marked `last`, so tests/conftest.py runs it after every other test of the session.
It makes its own workload (so it means something alone), then scans every log and audit file
written during the session for every plaintext, password, data key, token and derived key the
tests sent or received (tests/support/secrets_ledger.py), raw and in hex and base64.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

import grpc
import pytest
from support.secrets_ledger import MIN_SECRET, PRODUCED, SECRETS, b64_forms, remember
from support.secure_daemon import DIRS

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc, token_pb2, token_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

CONFIG = """
[server]
state_dir = "{state}"
allow_root = true

[[listeners]]
kind = "unix"
path = "{run}/ops.sock"
identity = "ops"

[keys.default]
uri = "local://default"

[logging]
level = "debug"

[[policy.rules]]
id = "ops-all"
callers = ["ops"]
keys = ["*"]
operations = ["*"]
"""


def _workload(daemon) -> None:
    env = envelope_pb2_grpc.EnvelopeServiceStub(daemon.channel)
    plaintext = os.urandom(32)
    remember(plaintext)
    ct = env.Encrypt(pb.EncryptRequest(key="default", plaintext=plaintext)).ciphertext
    env.Decrypt(pb.DecryptRequest(ciphertext=ct))
    dk = env.GenerateDataKey(pb.GenerateDataKeyRequest(key="default"))
    lease = env.LeaseDataKey(pb.LeaseDataKeyRequest(key="default"))
    remember(dk.plaintext, lease.data_key, ct[-32:])
    stub = token_pb2_grpc.TokenServiceStub(daemon.channel)
    try:
        token = stub.GenerateToken(token_pb2.GenerateTokenRequest(length=32))
    except grpc.RpcError as exc:
        unimplemented = exc.code() == grpc.StatusCode.UNIMPLEMENTED
        if not unimplemented:
            raise
        daemon.ledger.calls.pop()  # no such service in this build: no handler ran
    else:
        remember(token.token, token.text.encode())


_PREFIX = MIN_SECRET  # every encoded form is at least this long


def _files() -> set[Path]:
    files = {p for p in PRODUCED if p.exists()}
    for root in DIRS:
        files.update(p for p in root.rglob("*.log*") if p.is_file())
    return files


def _leaks(files: Iterable[Path], secrets: Iterable[bytes]) -> list[tuple[str, bytes]]:
    """(file, start of the form found) for every encoded form of a secret found in a file.

    Each file is read once and scanned once: every needle is indexed by its first bytes, so
    the cost grows with the files' size, not with files x needles.
    """
    by_prefix: dict[bytes, list[bytes]] = {}
    for needle in {form for secret in secrets for form in b64_forms(secret)}:
        by_prefix.setdefault(needle[:_PREFIX], []).append(needle)
    found = []
    for path in sorted(files):
        content = path.read_bytes()
        hits = {
            needle
            for start in range(len(content) - _PREFIX + 1)
            for needle in by_prefix.get(content[start : start + _PREFIX], ())
            if content.startswith(needle, start)
        }
        found += [(str(path), needle[:12]) for needle in sorted(hits)]
    return found


@pytest.mark.last
def test_no_secret_in_logs_or_audit(configured):
    """No plaintext, data key, lease key, token or master key appears in any file."""
    daemon = configured(CONFIG).start()
    _workload(daemon)
    daemon.stop()
    files = _files()
    assert daemon.log_path in files
    assert daemon.audit_path in files
    assert len({form for secret in SECRETS for form in b64_forms(secret)}) > 20
    assert _leaks(files, SECRETS) == []


# How a careless log line could carry a secret; the scan must catch each one.
ENCODINGS = {
    "raw": bytes,
    "hex": lambda secret: secret.hex().encode(),
    "HEX": lambda secret: secret.hex().upper().encode(),
    "base64": base64.b64encode,
    "urlsafe-base64": base64.urlsafe_b64encode,
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_secret_in_a_log_is_found(tmp_path, encoding):
    """The scan reports a log line that carries a secret, in any of the encodings it looks for."""
    secret = b"\xfb\xff" + os.urandom(22)  # base64 and its URL-safe form differ
    clean, leaky = tmp_path / "clean.log", tmp_path / "leaky.log"
    clean.write_bytes(b'{"event": "started"}\n')
    leaky.write_bytes(b'{"event": "decrypt", "detail": "' + ENCODINGS[encoding](secret) + b'"}\n')
    assert [path for path, _ in _leaks([clean, leaky], [secret])] == [str(leaky)]
