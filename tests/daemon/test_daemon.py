"""Daemon behaviour over a real socket: DEK cache limits, single-flight, locking, shutdown."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from broker.rpc.gen import envelope_pb2 as pb


def _kms(d, op: str) -> float:
    return d.metric("keybroker_kms_calls_total", op=op)


def _enc(d, plaintext: bytes = b"x", context=None) -> pb.EncryptResponse:
    return d.envelope.Encrypt(
        pb.EncryptRequest(key="default", plaintext=plaintext, context=context or {})
    )


class TestDekReuse:
    """Encrypt-side DEKs are reused until a limit is reached, counted in KMS calls."""

    def test_message_limit(self, make_daemon):
        """With max 10 messages per DEK, 35 encrypts make exactly 4 KMS calls."""
        d = make_daemon({"KEYBROKER_CACHE_ENCRYPT_MAX_MESSAGES": "10"}).start()
        for _ in range(35):
            _enc(d)
        assert _kms(d, "generate_data_key") == 4

    def test_byte_limit(self, make_daemon):
        """With max 1000 bytes per DEK, 10 encrypts of 300 bytes make 4 KMS calls."""
        d = make_daemon({"KEYBROKER_CACHE_ENCRYPT_MAX_BYTES": "1000"}).start()
        for _ in range(10):
            _enc(d, bytes(300))
        assert _kms(d, "generate_data_key") == 4

    def test_age_limit(self, make_daemon):
        """A DEK older than the max age is replaced."""
        d = make_daemon({"KEYBROKER_CACHE_ENCRYPT_MAX_AGE_SECONDS": "1"}).start()
        _enc(d)
        _enc(d)
        assert _kms(d, "generate_data_key") == 1
        time.sleep(1.2)
        _enc(d)
        assert _kms(d, "generate_data_key") == 2

    def test_context_gets_its_own_dek(self, make_daemon):
        """Each context uses its own DEK; our own envelopes then open without a KMS call."""
        d = make_daemon().start()
        cts = [_enc(d, b"x", {"tenant": t}).ciphertext for t in ("a", "b", "a", "b")]
        assert _kms(d, "generate_data_key") == 2
        for ct, t in zip(cts, "abab", strict=True):
            d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ct, context={"tenant": t}))
        assert _kms(d, "unwrap") == 0

    def test_cache_disabled(self, make_daemon):
        """With the cache off, every encrypt calls the KMS."""
        d = make_daemon({"ECL_CRYPTO_DEK_CACHE_ENABLED": "false"}).start()
        for _ in range(5):
            _enc(d)
        assert _kms(d, "generate_data_key") == 5

    def test_ten_thousand_encrypts(self, make_daemon):
        """10,000 encrypts with default limits make a single KMS call."""
        d = make_daemon().start()
        items = [pb.EncryptRequest(key="default", plaintext=b"row") for _ in range(1000)]
        for _ in range(10):
            d.envelope.EncryptBatch(pb.EncryptBatchRequest(items=items))
        assert _kms(d, "generate_data_key") == 1


class TestSingleFlight:
    """Concurrent misses for the same DEK make one KMS call."""

    def test_concurrent_encrypt_misses(self, make_daemon):
        """64 concurrent first encrypts make one generate call."""
        d = make_daemon().start()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: _enc(d), range(64)))
        assert _kms(d, "generate_data_key") == 1

    def test_concurrent_decrypt_misses(self, make_daemon):
        """64 concurrent decrypts of an envelope from a previous run make one unwrap call."""
        d = make_daemon()
        d.start()
        ct = _enc(d).ciphertext
        d.stop()
        d.start()
        batch = pb.DecryptBatchRequest(items=[pb.DecryptRequest(ciphertext=ct)] * 64)
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: d.envelope.DecryptBatch(batch), range(8)))
        assert all(r.response.plaintext == b"x" for reply in replies for r in reply.results)
        assert _kms(d, "unwrap") == 1


class TestLifecycle:
    """Start-up, single instance, permissions and graceful shutdown."""

    def test_socket_and_directory_modes(self, make_daemon):
        """The socket is 0660 and its directory 0750."""
        d = make_daemon().start()
        assert stat.S_IMODE(d.socket.stat().st_mode) == 0o660
        assert stat.S_IMODE(d.state_dir.stat().st_mode) == 0o750
        assert stat.S_IMODE((d.state_dir / "keyring.json").stat().st_mode) == 0o600

    def test_second_daemon_refuses(self, make_daemon):
        """A second daemon on the same socket exits with a clear message; the first serves on."""
        d = make_daemon().start()
        second = subprocess.run(
            [sys.executable, "-m", "broker", "serve", "--dev", "--state-dir", str(d.state_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 2
        assert "another keybroker daemon is already serving" in second.stderr
        assert _enc(d).ciphertext

    def test_sigterm_exits_zero_and_removes_socket(self, make_daemon):
        """SIGTERM drains, removes the socket and exits 0."""
        d = make_daemon().start()
        assert d.stop() == 0
        assert not d.socket.exists()

    def test_sigterm_under_load_loses_no_completed_call(self, make_daemon):
        """Every call that completed during a SIGTERM under load returned a valid envelope."""
        d = make_daemon({"KEYBROKER_GRACE_SECONDS": "10"}).start()
        done: list[tuple[bytes, bytes]] = []
        failures: list[grpc.StatusCode] = []
        stop = threading.Event()

        def worker() -> None:
            channel = d.connect()
            stub = type(d.envelope)(channel)
            while not stop.is_set():
                pt = os.urandom(64)
                try:
                    done.append(
                        (
                            pt,
                            stub.Encrypt(
                                pb.EncryptRequest(key="default", plaintext=pt), timeout=5
                            ).ciphertext,
                        )
                    )
                except grpc.RpcError as exc:
                    failures.append(exc.code())
                    return

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        completed_before = len(done)
        assert d.stop() == 0
        stop.set()
        for t in threads:
            t.join(10)
        assert completed_before > 0
        assert set(failures) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
        d.start()
        for pt, ct in done:
            assert d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ct)).plaintext == pt

    def test_logs_hold_no_secrets(self, make_daemon):
        """Plaintexts and envelopes never appear in the daemon's log."""
        d = make_daemon().start()
        marker = b"PLAINTEXT-MARKER-7f3a"
        ct = _enc(d, marker).ciphertext
        with pytest.raises(grpc.RpcError):
            d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ct, context={"wrong": "1"}))
        d.stop()
        log = d.log()
        assert "rpc_failed" in log
        assert marker.decode() not in log
        assert ct.hex() not in log
        master = (d.state_dir / "master.key").read_text().strip()
        assert master not in log
