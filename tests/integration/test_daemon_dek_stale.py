"""The decrypt-side stale window: cached DEKs keep opening envelopes while Vault is down.

One OpenBao (dev mode) and two daemons on the same transit key, both with a 1 s decrypt TTL:
one with `decrypt_stale_seconds = 60`, one with the default 0. Each seals and opens an
envelope, OpenBao is stopped, the TTL passes, and each opens the envelope again.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from integration.kms.openbao import start_openbao
from support.daemon import Daemon
from support.rpc import assert_fails

from broker.rpc.gen import envelope_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from integration.kms.openbao import OpenBaoServer

CONTEXT = {"tenant": "acme"}
STALE_SERVES = 20
VAULT = {"backend": "vault-transit"}


def _config(path: Path, bao: OpenBaoServer, key_id: str) -> Path:
    """A key on the transit key; the breaker stays open for the whole test once it opens."""
    path.write_text(
        f"""
[keys.on-vault]
uri = "vault-transit://{key_id}"

[backends.vault]
address = "{bao.url}"
token = "{bao.root_token}"
[backends.vault.resilience]
timeout = 2.0
breaker_failures = 2
breaker_reset_seconds = 60
"""
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[OpenBaoServer, Daemon, Daemon]]:
    """OpenBao, a daemon with a 60 s stale window and one without; all stopped afterwards."""
    bao = start_openbao()
    daemons: list[Daemon] = []
    try:
        config = _config(tmp_path / "keybroker.toml", bao, bao.create_key("app"))
        for name, stale in (("stale", "60"), ("strict", "0")):
            env = {
                "KEYBROKER_CACHE_DECRYPT_TTL_SECONDS": "1",
                "KEYBROKER_CACHE_DECRYPT_STALE_SECONDS": stale,
                "KEYBROKER_HEALTH_PROBE_SECONDS": "0",  # the test counts every KMS attempt
            }
            daemons.append(Daemon(tmp_path / name, env, config=config))
            daemons[-1].start()
        yield bao, daemons[0], daemons[1]
    finally:
        for d in daemons:
            d.close()
        bao.close()


def _seal(d: Daemon) -> bytes:
    request = pb.EncryptRequest(key="on-vault", plaintext=b"card", context=CONTEXT)
    return d.envelope.Encrypt(request).ciphertext


def _request(ciphertext: bytes) -> pb.DecryptRequest:
    return pb.DecryptRequest(ciphertext=ciphertext, context=CONTEXT)


def _stale(d: Daemon) -> float:
    return d.metric("keybroker_dek_cache_total", side="decrypt", result="stale")


def _resilience(d: Daemon, event: str) -> float:
    return d.metric("keybroker_kms_resilience_total", event=event, **VAULT)


class TestStaleWindow:
    """Past its TTL, a cached DEK serves only while the KMS is unavailable, and only if enabled."""

    def test_serves_through_an_outage_only_when_enabled(self, outage):
        """Stale 60 s: OK and counted; stale 0: UNAVAILABLE; a stale serve reaches no KMS."""
        bao, stale, strict = outage
        sealed = {d: _seal(d) for d in (stale, strict)}
        for d, ciphertext in sealed.items():
            assert d.envelope.Decrypt(_request(ciphertext)).plaintext == b"card"
        bao.stop()
        time.sleep(1.3)
        assert stale.envelope.Decrypt(_request(sealed[stale])).plaintext == b"card"
        assert _stale(stale) == 1
        assert_fails(
            strict.envelope.Decrypt,
            _request(sealed[strict]),
            grpc.StatusCode.UNAVAILABLE,
            "KMS_UNAVAILABLE",
        )
        assert _stale(strict) == 0
        self._stale_serves_reach_no_kms(stale, sealed[stale])

    @staticmethod
    def _stale_serves_reach_no_kms(d: Daemon, ciphertext: bytes) -> None:
        """With the breaker open, each stale serve is refused by it before any KMS attempt."""
        assert d.metric("keybroker_kms_breaker_state", state="open", **VAULT) == 1
        failures, refused = _resilience(d, "failures"), _resilience(d, "rejected_open")
        seconds = []
        for _ in range(STALE_SERVES):
            started = time.perf_counter()
            assert d.envelope.Decrypt(_request(ciphertext)).plaintext == b"card"
            seconds.append(time.perf_counter() - started)
        assert _resilience(d, "failures") == failures, "a stale serve made a KMS attempt"
        assert _resilience(d, "rejected_open") == refused + STALE_SERVES
        assert _stale(d) == 1 + STALE_SERVES
        assert statistics.median(seconds) < 0.05, seconds
        assert d.log().count("dek_cache_serving_stale") == 1, "one warning per outage"
