"""Python-client scenarios: each prepares its data, warms up, runs a bounded loop, checks once."""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from _measure import Measured, Plan, drive

if TYPE_CHECKING:
    from collections.abc import Callable

    from keybroker_client import Client

__all__ = ["BenchCheckError", "Scenario", "scenarios"]

KEY = "default"
CONTEXT = {"tenant": "bench"}
KIB = 1024
MIB = 1024 * 1024
_PLAINTEXT = os.urandom(KIB)


class BenchCheckError(RuntimeError):
    """A scenario's result did not round-trip: its numbers would mean nothing."""


def _check(ok: bool, what: str) -> None:  # noqa: FBT001 - reads as an assertion
    if not ok:
        raise BenchCheckError(f"round trip failed: {what}")


def _warm(op: Callable[[], object], plan: Plan) -> None:
    for _ in range(plan.warmup):
        op()


def _unary(op: Callable[[], object], plan: Plan, threads: int = 1) -> Measured:
    _warm(op, plan)
    timing = drive(op, ops=plan.unary_ops, seconds=plan.seconds, threads=threads)
    return Measured(timing, 1, "calls/s")


def encrypt_1k(client: Client, plan: Plan, threads: int) -> Measured:
    """Unary Encrypt of 1 KiB: one RPC per message, the baseline the other modes beat."""

    def op() -> bytes:
        return client.encrypt(_PLAINTEXT, key=KEY, context=CONTEXT)

    measured = _unary(op, plan, threads)
    _check(client.decrypt(op(), context=CONTEXT) == _PLAINTEXT, "Encrypt")
    return measured


def decrypt_1k(client: Client, plan: Plan) -> Measured:
    """Unary Decrypt of 1 KiB envelopes (the daemon's decrypt cache holds their DEK)."""
    envelopes = [client.encrypt(_PLAINTEXT, key=KEY, context=CONTEXT) for _ in range(16)]
    ring = itertools.cycle(envelopes)

    def op() -> bytes:
        return client.decrypt(next(ring), context=CONTEXT)

    measured = _unary(op, plan)
    _check(op() == _PLAINTEXT, "Decrypt")
    return measured


def generate_data_key(client: Client, plan: Plan) -> Measured:
    """GenerateDataKey: a fresh 256-bit key and its envelope per call."""

    def op() -> tuple[bytes, bytes]:
        return client.generate_data_key(key=KEY, context=CONTEXT)

    measured = _unary(op, plan)
    plaintext, envelope = op()
    _check(client.decrypt(envelope, context=CONTEXT) == plaintext, "GenerateDataKey")
    return measured


def encrypt_batch(client: Client, plan: Plan) -> Measured:
    """EncryptBatch of N x 1 KiB: one RPC for N messages."""
    items = [_PLAINTEXT] * plan.batch_items

    def op() -> list[bytes]:
        results = client.encrypt_batch(items, key=KEY, context=CONTEXT)
        return [r for r in results if isinstance(r, bytes)]

    _warm(op, plan)
    timing = drive(op, ops=max(1, plan.unary_ops // plan.batch_items), seconds=plan.seconds)
    sealed = op()
    _check(len(sealed) == len(items), "EncryptBatch item errors")
    _check(client.decrypt(sealed[-1], context=CONTEXT) == _PLAINTEXT, "EncryptBatch")
    return Measured(timing, plan.batch_items, "items/s")


def decrypt_batch(client: Client, plan: Plan) -> Measured:
    """DecryptBatch of N x 1 KiB envelopes: one RPC for N messages."""
    sealed = client.encrypt_batch([_PLAINTEXT] * plan.batch_items, key=KEY, context=CONTEXT)
    envelopes = [s for s in sealed if isinstance(s, bytes)]

    def op() -> list[bytes]:
        results = client.decrypt_batch(envelopes, context=CONTEXT)
        return [r for r in results if isinstance(r, bytes)]

    _warm(op, plan)
    timing = drive(op, ops=max(1, plan.unary_ops // plan.batch_items), seconds=plan.seconds)
    _check(op() == [_PLAINTEXT] * plan.batch_items, "DecryptBatch")
    return Measured(timing, plan.batch_items, "items/s")


def lease_seal_1k(client: Client, plan: Plan) -> Measured:
    """DataKeyLease: one LeaseDataKey RPC, then AES-256-GCM in this process, no RPC per message."""
    with client.lease_data_key(key=KEY, context=CONTEXT) as lease:

        def op() -> bytes:
            return lease.encrypt(_PLAINTEXT)

        _warm(op, plan)
        timing = drive(op, ops=plan.lease_ops, seconds=plan.seconds)
        last = op()
    _check(client.decrypt(last, context=CONTEXT) == _PLAINTEXT, "lease envelope")
    return Measured(timing, 1, "envelopes/s")


class StreamPair:
    """EncryptStream then DecryptStream of the same payload, sent in 1 MiB chunks."""

    def __init__(self) -> None:
        """One random 1 MiB block, repeated to the plan's size; no envelope yet."""
        self._block = os.urandom(MIB)
        self._envelope = b""

    def encrypt(self, client: Client, plan: Plan) -> Measured:
        """EncryptStream of the payload; keeps the envelope for decrypt."""
        source = [self._block] * plan.stream_mib
        chunks: list[bytes] = []

        def op() -> None:
            chunks[:] = client.encrypt_stream(source, key=KEY, context=CONTEXT, chunk_size=MIB)

        timing = drive(op, ops=plan.stream_ops, seconds=plan.seconds)
        self._envelope = b"".join(chunks)
        _check(len(self._envelope) > plan.stream_mib * MIB, "EncryptStream length")
        return Measured(timing, plan.stream_mib, "MiB/s")

    def decrypt(self, client: Client, plan: Plan) -> Measured:
        """DecryptStream of the envelope encrypt made; every chunk is hashed, then compared."""
        if not self._envelope:
            self.encrypt(client, replace(plan, stream_ops=1))
        source = [self._envelope]
        digests: list[bytes] = []

        def op() -> None:
            h = hashlib.sha256()
            for chunk in client.decrypt_stream(source, context=CONTEXT, chunk_size=MIB):
                h.update(chunk)
            digests.append(h.digest())

        timing = drive(op, ops=plan.stream_ops, seconds=plan.seconds)
        expected = hashlib.sha256(self._block * plan.stream_mib).digest()
        _check(bool(digests) and set(digests) == {expected}, "DecryptStream")
        return Measured(timing, plan.stream_mib, "MiB/s")


@dataclass(frozen=True)
class Scenario:
    """A named Python-client scenario."""

    name: str
    run: Callable[[Client, Plan], Measured]


def scenarios(plan: Plan) -> list[Scenario]:
    """The Python-client scenarios in the order they run, named with the plan's sizes."""
    n, mib = plan.batch_items, plan.stream_mib
    streams = StreamPair()
    return [
        Scenario("py Encrypt 1 KiB, 1 thread", lambda c, p: encrypt_1k(c, p, 1)),
        Scenario("py Encrypt 1 KiB, 4 threads", lambda c, p: encrypt_1k(c, p, 4)),
        Scenario(f"py EncryptBatch {n} x 1 KiB", encrypt_batch),
        Scenario("py Decrypt 1 KiB", decrypt_1k),
        Scenario(f"py DecryptBatch {n} x 1 KiB", decrypt_batch),
        Scenario(f"py EncryptStream {mib} MiB, 1 MiB chunks", streams.encrypt),
        Scenario(f"py DecryptStream {mib} MiB, 1 MiB chunks", streams.decrypt),
        Scenario("py DataKeyLease seal 1 KiB (local)", lease_seal_1k),
        Scenario("py GenerateDataKey", generate_data_key),
    ]
