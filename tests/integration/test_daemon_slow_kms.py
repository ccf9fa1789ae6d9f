"""A slow but healthy Vault behind a one-connection pool: queueing is not a KMS failure.

OpenBao (dev mode) sits behind `SlowProxy`, which makes every answer 250 ms late. The daemon
talks to it with `max_connections = 1` and a 2 s resilience deadline: one call fits easily,
a queue of 32 concurrent decrypts (DEK cache off, so each one unwraps) does not. The KMS
answers every call it receives, so the circuit breaker must stay closed; the callers that
waited in the queue past their deadline get the retryable RESOURCE_EXHAUSTED instead.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
import pytest
from integration.kms.openbao import start_openbao
from support.daemon import Daemon
from support.rpc import reason
from support.slow_proxy import SlowProxy

from broker.rpc.gen import envelope_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from integration.kms.openbao import OpenBaoServer

DELAY = 0.25
CONCURRENT = 32
VAULT = {"backend": "vault-transit"}


def _config(path: Path, bao: OpenBaoServer, proxy: SlowProxy, key_id: str) -> Path:
    path.write_text(
        f"""
[keys.on-vault]
uri = "vault-transit://{key_id}"

[backends.vault]
address = "{proxy.url}"
token = "{bao.root_token}"
max_connections = 1
[backends.vault.resilience]
timeout = 2.0
breaker_failures = 2
breaker_reset_seconds = 60
"""
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def slow_vault(tmp_path: Path) -> Iterator[tuple[Daemon, SlowProxy]]:
    """A daemon without DEK cache on OpenBao behind the delaying proxy; all stopped after."""
    with start_openbao() as bao, SlowProxy(bao.port, delay=DELAY) as proxy:
        config = _config(tmp_path / "keybroker.toml", bao, proxy, bao.create_key("app"))
        # no background probes: the test counts every call the backend gets
        env = {"KEYBROKER_CACHE_ENABLED": "false", "KEYBROKER_HEALTH_PROBE_SECONDS": "0"}
        with Daemon(tmp_path / "state", env, config=config) as d:
            yield d, proxy


def _decrypt(d: Daemon, ciphertext: bytes) -> tuple[grpc.StatusCode, str]:
    """The code and reason word of one Decrypt."""
    try:
        d.envelope.Decrypt(pb.DecryptRequest(ciphertext=ciphertext))
    except grpc.RpcError as exc:
        return exc.code(), reason(exc)
    return grpc.StatusCode.OK, ""


class TestQueueingIsNotFailure:
    """Time waiting for the backend's connection never counts against the circuit breaker."""

    def test_breaker_stays_closed_and_the_queue_overflow_is_busy(self, slow_vault):
        """32 concurrent decrypts: some OK, the rest busy (retryable); the circuit stays closed."""
        daemon, proxy = slow_vault
        sealed = daemon.envelope.Encrypt(pb.EncryptRequest(key="on-vault", plaintext=b"x"))
        assert _decrypt(daemon, sealed.ciphertext) == (grpc.StatusCode.OK, "")
        exchanges = proxy.exchanges
        with ThreadPoolExecutor(CONCURRENT) as pool:
            outcomes = list(
                pool.map(lambda _: _decrypt(daemon, sealed.ciphertext), range(CONCURRENT))
            )
        counts = collections.Counter(outcomes)
        assert daemon.metric("keybroker_kms_breaker_state", state="open", **VAULT) == 0
        assert daemon.metric("keybroker_kms_resilience_total", event="failures", **VAULT) == 0
        assert counts[grpc.StatusCode.OK, ""] >= 3, counts
        busy = (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED")
        assert counts[busy] >= CONCURRENT // 2, counts
        busy_metric = {"event": "rejected_busy", **VAULT}
        assert daemon.metric("keybroker_kms_resilience_total", **busy_metric) == counts[busy]
        timed_out = (grpc.StatusCode.UNAVAILABLE, "KMS_UNAVAILABLE")
        assert set(counts) <= {(grpc.StatusCode.OK, ""), busy, timed_out}, counts
        assert counts[timed_out] <= 2, "only a call started just before its deadline times out"
        reached = proxy.exchanges - exchanges
        assert reached == CONCURRENT - counts[busy], "a busy answer never reached the KMS"
        assert _decrypt(daemon, sealed.ciphertext) == (grpc.StatusCode.OK, "")
