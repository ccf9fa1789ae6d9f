"""A real daemon's audit trail: a record per RPC and per item, verify, rotation, fail-closed.

The continuity tests put the audit file on a small tmpfs and fill it, cut the file between two
runs, and check the daemon's checkpoints; mounting needs root, as in test_keystore_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from support.daemon import DaemonError
from support.mounts import fill, tmpfs
from support.secrets_ledger import remember

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc, key_admin_pb2, key_admin_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

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


def _verify(daemon, *args) -> subprocess.CompletedProcess[str]:
    """`keybroker audit verify ARGS --state-dir STATE` with the daemon's root key."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "broker",
            "audit",
            "verify",
            *map(str, args),
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

    def test_config_without_keys_finds_the_root_and_logs_nothing_on_stdout(self, audited, tmp_path):
        """--config of a state dir alone (no [keys]) verifies; stdout holds only the report."""
        _workload(audited)
        config = tmp_path / "verify.toml"
        config.write_text(f'[server]\nstate_dir = "{audited.state_dir}"\n')
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "broker",
                "audit",
                "verify",
                "--config",
                str(config),
                str(audited.audit_path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=audited.env,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("ok: "), out.stdout


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
        assert "note: starts at seq 3" in alone.stdout  # after the first start record
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


def _encrypt(daemon, text: bytes = b"x" * 16) -> None:
    env, _ = _stubs(daemon)
    env.Encrypt(pb.EncryptRequest(key="default", plaintext=text))


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs for the audit file.

    Request it before `configured`, so the daemons are stopped before it is unmounted.
    """
    with tmpfs(tmp_path / "audit", "1m") as mount_point:
        yield mount_point


def _cut_a_write(daemon, audit: Path, spares: list[Path]) -> None:
    """Call until an audit write is cut mid-line (the file ends without a newline).

    tmpfs hands out whole pages, so a record is cut where it crosses into a page that cannot
    be had; when a record happens to end exactly at a page's end, the next write fails whole,
    and freeing a spare page gives the following records another boundary to cross.
    """
    for _ in range(200):
        try:
            _encrypt(daemon)
        except grpc.RpcError:
            if not audit.read_bytes().endswith(b"\n"):
                return
            spares.pop().unlink()
    pytest.fail("no audit write was cut mid-line")


def _checkpoints(daemon) -> list[dict]:
    """The audit_checkpoint events of the daemon's log, oldest first."""
    return [json.loads(x) for x in daemon.log().splitlines() if '"audit_checkpoint"' in x]


class TestContinuity:
    """A full disk, a cut tail and checkpoints, against a real daemon."""

    def test_full_disk_cut_line_is_repaired(self, volume, configured):
        """A write cut by ENOSPC leaves half a line; once space is freed the daemon repairs it."""
        audit = volume / "audit.log"
        d = configured(CONFIG, audit=f'file = "{audit}"').start()
        _encrypt(d)
        spares = [volume / f"spare{i}" for i in range(8)]
        for spare in spares:
            spare.write_bytes(bytes(4096))
        fill(volume / "filler")
        _cut_a_write(d, audit, spares)
        content = audit.read_bytes()
        offset = content.rindex(b"\n") + 1
        with pytest.raises(grpc.RpcError):  # still full: nothing can be recorded, so no service
            _encrypt(d)
        (volume / "filler").unlink()
        _encrypt(d)
        _encrypt(d)
        d.stop()
        d.ledger.calls.clear()  # calls refused while full have no record, by construction
        lines = audit.read_bytes().splitlines()
        cut_line = content.count(b"\n") + 1
        repair = json.loads(lines[cut_line])
        assert (repair["event"], repair["offset"], repair["length"]) == (
            "audit_repair",
            offset,
            len(content) - offset,
        )
        assert json.loads(lines[-1])["event"] == "rpc"
        out = _verify(d, audit)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{audit}:{cut_line}: a write cut short" in out.stdout
        assert "repaired" in out.stdout
        assert "audit_line_repaired" in d.log()

    def test_restart_after_a_cut_tail(self, audited):
        """Killed, its file cut at a line boundary, restarted: the start record names the loss."""
        for _ in range(3):
            _encrypt(audited)
        audited.kill()  # no clean stop: only the head kept with every record survives
        lines = audited.audit_path.read_bytes().splitlines(keepends=True)
        lost = [json.loads(line)["seq"] for line in lines[3:]]
        audited.audit_path.write_bytes(b"".join(lines[:3]))
        audited.start()
        audited.stop()
        # the trail fails its check by design now: keep it aside from the check at teardown
        cut = audited.audit_path.rename(audited.audit_path.with_name("audit-cut.log"))
        audited.ledger.calls.clear()
        start = json.loads(cut.read_bytes().splitlines()[3])
        assert (start["event"], start["lost_from"], start["lost_to"]) == (
            "start",
            lost[0],
            lost[-1],
        )
        assert start["seq"] == lost[-1] + 1  # the lost numbers are not used again
        assert "audit_tail_lost" in audited.log()
        out = _verify(audited, cut)
        assert out.returncode == 1
        assert out.stdout.startswith(f"{cut}:4: tail truncated: ")
        assert f"records {lost[0]}..{lost[-1]}" in out.stdout

    def test_checkpoint_detects_a_cut_tail(self, configured, tmp_path):
        """Lines removed cleanly from the end pass the chain check, not the checkpoint check."""
        anchor = tmp_path / "checkpoint.json"
        audit = f'checkpoint_seconds = 0.2\ncheckpoint_file = "{anchor}"'
        d = configured(CONFIG, audit=audit).start()
        for _ in range(3):
            _encrypt(d)
        seq = json.loads(d.audit_path.read_bytes().splitlines()[-1])["seq"]
        deadline = time.monotonic() + 10
        while seq not in [c["seq"] for c in _checkpoints(d)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert anchor.exists()  # written while running, not only at stop
        d.stop()
        logged = json.dumps(_checkpoints(d)[-1])
        for given in (anchor, d.log_path, logged):
            out = _verify(d, d.audit_path, "--checkpoint", given)
            assert out.returncode == 0, out.stdout + out.stderr
            assert f"(seq {seq})" in out.stdout
        cut = tmp_path / "audit.log"
        cut.write_bytes(b"".join(d.audit_path.read_bytes().splitlines(keepends=True)[:-2]))
        assert _verify(d, cut).returncode == 0  # the chain alone cannot see it
        out = _verify(d, cut, "--checkpoint", anchor)
        assert out.returncode == 1
        assert f"records {seq - 1}..{seq} were cut from the end" in out.stdout

    def test_checkpoint_seconds_bounds(self, configured):
        """A negative interval stops the start with one line naming the field."""
        d = configured(CONFIG, audit="checkpoint_seconds = -1")
        with pytest.raises(DaemonError, match=r"audit\.checkpoint_seconds: must be between 0"):
            d.start()
