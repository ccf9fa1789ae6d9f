"""A real daemon's audit trail: a record per RPC and per item, verify, rotation, fail-closed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from support.secrets_ledger import remember

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc, key_admin_pb2, key_admin_pb2_grpc

CONFIG = """
[server]
state_dir = "{state}"
allow_root = true

[[listeners]]
kind = "unix"
path = "{run}/ops.sock"
mode = "0600"
identity = "ops"

[audit]
{audit}

[keys.default]
uri = "local://default"

[keys.secret]
uri = "local://secret"

[[policy.rules]]
id = "ops-all-but-secret"
callers = ["ops"]
keys = ["default"]
operations = ["*"]
"""


@pytest.fixture
def audited(configured):
    """A daemon whose only caller (`ops`) may use `default` but not `secret`."""
    return configured(CONFIG, audit="").start()


def _stubs(daemon):
    return (
        envelope_pb2_grpc.EnvelopeServiceStub(daemon.channel),
        key_admin_pb2_grpc.KeyAdminServiceStub(daemon.channel),
    )


def _workload(daemon) -> None:
    """One of every kind of RPC, allowed, denied and invalid."""
    env, admin = _stubs(daemon)
    plaintexts = [os.urandom(20) for _ in range(5)]
    remember(*plaintexts)
    ct = env.Encrypt(pb.EncryptRequest(key="default", plaintext=plaintexts[0])).ciphertext
    env.Decrypt(pb.DecryptRequest(ciphertext=ct))
    items = [pb.EncryptRequest(key="default", plaintext=p) for p in plaintexts]
    batch = env.EncryptBatch(pb.EncryptBatchRequest(items=items))
    env.DecryptBatch(
        pb.DecryptBatchRequest(
            items=[pb.DecryptRequest(ciphertext=r.response.ciphertext) for r in batch.results]
        )
    )
    env.Rewrap(pb.RewrapRequest(ciphertext=ct))
    dk = env.GenerateDataKey(pb.GenerateDataKeyRequest(key="default"))
    lease = env.LeaseDataKey(pb.LeaseDataKeyRequest(key="default"))
    remember(dk.plaintext, lease.data_key)
    start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
    chunk = pb.EncryptStreamRequest(chunk=plaintexts[1])
    envelope = b"".join(r.chunk for r in env.EncryptStream(iter([start, chunk])))
    dstart = pb.DecryptStreamRequest(start=pb.DecryptStreamStart())
    list(env.DecryptStream(iter([dstart, pb.DecryptStreamRequest(chunk=envelope)])))
    admin.DescribeKey(key_admin_pb2.DescribeKeyRequest(key="default"))
    admin.ListKeys(key_admin_pb2.ListKeysRequest())
    admin.RotateKey(key_admin_pb2.RotateKeyRequest(key="default"))
    for bad in (
        lambda: env.Encrypt(pb.EncryptRequest(key="secret", plaintext=plaintexts[2])),
        lambda: env.Encrypt(pb.EncryptRequest(key="bad key!", plaintext=b"x")),
        lambda: env.Decrypt(pb.DecryptRequest(ciphertext=b"\x01garbage")),
    ):
        with pytest.raises(grpc.RpcError):
            bad()


class TestRecords:
    """What the audit log holds after a workload."""

    def test_every_rpc_and_item_has_a_record(self, audited):
        """One rpc record per call (by request id), one op record per batch item."""
        _workload(audited)
        records = audited.records()
        rpc = {r["request_id"]: r for r in records if r["event"] == "rpc"}
        assert len(audited.ledger.calls) == 15
        for method, request_id in audited.ledger.calls:
            assert rpc[request_id]["method"] == method.rsplit("/", 1)[1]
        batch_id = next(rid for m, rid in audited.ledger.calls if m.endswith("EncryptBatch"))
        items = [r for r in records if r["event"] == "op" and r["request_id"] == batch_id]
        assert len(items) == 5
        assert {(r["operation"], r["decision"], r["rule_id"], r["key_version"]) for r in items} == {
            ("encrypt", "allow", "ops-all-but-secret", 1)
        }

    def test_denied_and_invalid(self, audited):
        """A denied call records deny/default-deny; a malformed one records no decision."""
        _workload(audited)
        ops = [r for r in audited.records() if r["event"] == "op"]
        denied = [r for r in ops if r["key"] == "secret"]
        assert denied[0]["decision"] == "deny"
        assert denied[0]["code"] == "PERMISSION_DENIED"
        invalid = [r for r in ops if r["code"] == "INVALID_ARGUMENT"]
        assert {r["decision"] for r in invalid} == {"none"}

    def test_only_allow_listed_fields(self, audited):
        """No record has a field outside the allow-list."""
        from broker.audit.record import FIELDS  # noqa: PLC0415 - the contract under test

        _workload(audited)
        for record in audited.records():
            assert set(record) <= set(FIELDS)


def _verify(daemon, *files) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "broker",
            "audit",
            "verify",
            *map(str, files),
            "--state-dir",
            str(daemon.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=daemon.env,
    )


class TestVerifyCommand:
    """`keybroker audit verify` on copies of a real audit file."""

    @pytest.mark.parametrize(
        ("tamper", "line", "word"),
        [
            (
                lambda ls: ls.__setitem__(4, ls[4].replace(b'"code":"OK"', b'"code":"NO"')),
                5,
                "edited",
            ),
            (lambda ls: ls.pop(4), 5, "deleted"),
            (lambda ls: ls.insert(4, ls.pop(5)), 5, "reordered"),
        ],
        ids=["edited", "deleted", "reordered"],
    )
    def test_detects(self, audited, tmp_path, tamper, line, word):
        """The first broken record is named by file and line; the exit code is 1."""
        _workload(audited)
        lines = audited.audit_path.read_bytes().splitlines()
        assert _verify(audited, audited.audit_path).returncode == 0
        tamper(lines)
        copy = tmp_path / "audit.log"
        copy.write_bytes(b"\n".join(lines) + b"\n")
        out = _verify(audited, copy)
        assert out.returncode == 1
        assert out.stdout.startswith(f"{copy}:{line}: ")
        assert word in out.stdout


class TestLifecycle:
    """Rotation on SIGHUP and restarts keep one chain."""

    def test_rotation_and_restart(self, audited):
        """Rename + SIGHUP starts a new file that continues the chain; so does a restart."""
        env, _ = _stubs(audited)
        env.Encrypt(pb.EncryptRequest(key="default", plaintext=b"one"))
        rotated = audited.audit_path.with_name("audit.log.1")
        audited.audit_path.rename(rotated)
        audited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "audit_reopened" not in audited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        env.Encrypt(pb.EncryptRequest(key="default", plaintext=b"two"))
        audited.stop()
        audited.start()
        _stubs(audited)[0].Encrypt(pb.EncryptRequest(key="default", plaintext=b"three"))
        both = _verify(audited, rotated, audited.audit_path)
        assert both.returncode == 0, both.stdout
        assert "restarted" not in both.stdout
        alone = _verify(audited, audited.audit_path)
        assert alone.returncode == 0
        assert "note: starts at seq 2" in alone.stdout
        assert "audit_chain_head" in audited.log()


class TestFailClosed:
    """When the audit file cannot be written the operation is not served (configurable)."""

    def test_fail_closed(self, configured):
        """/dev/full as the audit file: INTERNAL "internal error", nothing returned."""
        d = configured(CONFIG, audit='file = "/dev/full"').start()
        env, _ = _stubs(d)
        with pytest.raises(grpc.RpcError) as info:
            env.Encrypt(pb.EncryptRequest(key="default", plaintext=b"x"))
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INTERNAL,
            "internal error",
        )
        d.ledger.calls.clear()  # nothing could be recorded, by construction

    def test_fail_open(self, configured):
        """With fail_closed = false the call succeeds and the failure is counted."""
        d = configured(CONFIG, audit='file = "/dev/full"\nfail_closed = false').start()
        env, _ = _stubs(d)
        assert env.Encrypt(pb.EncryptRequest(key="default", plaintext=b"x")).ciphertext
        assert d.metric("keybroker_audit_records_total", result="failed") >= 2
        d.ledger.calls.clear()
        assert json.loads(d.log().splitlines()[-1])  # the daemon log stays JSON
