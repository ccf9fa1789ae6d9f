"""Calls that never send their request cannot take every slot of a listener.

A connection holds at most `server.max_streams_per_connection` calls, and a call whose first
message does not arrive within `server.first_message_seconds` (or whose next stream message
does not arrive within `server.stream_idle_seconds`) is ended, audited, and its slot freed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from support.daemon import Daemon

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

if TYPE_CHECKING:
    from pathlib import Path

SILENT_CALLS = 300
SLOTS = 256  # fewer than the silent calls, so without a per-connection cap they take them all
PER_CONNECTION = 50
FIRST_MESSAGE_SECONDS = 1.5
IDLE_SECONDS = 2.0
ENCRYPT = "/keybroker.v1.EnvelopeService/Encrypt"
ENCRYPT_STREAM = "/keybroker.v1.EnvelopeService/EncryptStream"
CONFIG = f"""
[server]
max_concurrent_rpcs = {SLOTS}
max_streams_per_connection = {PER_CONNECTION}
first_message_seconds = {FIRST_MESSAGE_SECONDS}
stream_idle_seconds = {IDLE_SECONDS}
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    """A dev daemon with few slots and short first-message and idle deadlines."""
    base: Path = tmp_path_factory.mktemp("kb")
    config = base / "keybroker.toml"
    config.write_text(CONFIG, encoding="utf-8")
    d = Daemon(base / "state", config=config).start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def _channel(daemon: Daemon) -> grpc.aio.Channel:
    """An asyncio channel on a connection of its own."""
    return grpc.aio.insecure_channel(
        f"unix:{daemon.socket}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def _records(daemon: Daemon) -> list[dict[str, object]]:
    path = daemon.state_dir / "audit.log"
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def _silent_calls_then_encrypt(daemon: Daemon) -> tuple[list[grpc.StatusCode], float]:
    """Open silent calls on one connection, let another caller Encrypt; the silent calls' codes."""
    async with _channel(daemon) as silent, _channel(daemon) as other:
        await silent.channel_ready()  # the daemon's stream limit is known before calls start
        method = silent.stream_stream(ENCRYPT)
        calls = [method() for _ in range(SILENT_CALLS)]
        await asyncio.sleep(0.5)  # every call the connection may carry is open on the daemon
        stub = envelope_pb2_grpc.EnvelopeServiceStub(other)
        started = time.monotonic()
        reply = await stub.Encrypt(pb.EncryptRequest(key="default", plaintext=b"x"), timeout=5)
        assert reply.ciphertext
        assert time.monotonic() - started < FIRST_MESSAGE_SECONDS, "served without waiting"
        codes = await asyncio.wait_for(asyncio.gather(*(c.code() for c in calls)), 30)
        return codes, time.monotonic() - started


def test_silent_calls_do_not_lock_out_another_caller(guarded: Daemon) -> None:
    """300 calls that never send a message leave room for another caller, and are then ended.

    The daemon ends each silent call it carries with RESOURCE_EXHAUSTED and audits it; a call
    the client starts before it has seen an ended one's stream closed on the daemon's side is
    refused by HTTP/2 (REFUSED_STREAM, UNAVAILABLE to the client).
    """
    codes, elapsed = asyncio.run(_silent_calls_then_encrypt(guarded))
    ended = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
    assert ended >= PER_CONNECTION, {c: codes.count(c) for c in codes}
    rounds = -(-SILENT_CALLS // PER_CONNECTION)
    assert elapsed < rounds * FIRST_MESSAGE_SECONDS + 10
    audited = [
        r
        for r in _records(guarded)
        if r.get("event") == "rpc"
        and r.get("method") == "Encrypt"
        and r.get("code") == "RESOURCE_EXHAUSTED"
    ]
    assert len(audited) == ended, "every ended call is audited"


async def _idle_stream(daemon: Daemon) -> tuple[grpc.StatusCode, str, float]:
    """Start an EncryptStream, then go silent; the code, message and time it ended after."""
    async with _channel(daemon) as channel:
        call = channel.stream_stream(ENCRYPT_STREAM)()
        start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
        await call.write(start.SerializeToString())
        await call.read()  # the header: the stream is in the pipeline
        started = time.monotonic()
        code = await asyncio.wait_for(call.code(), 30)
        return code, await call.details() or "", time.monotonic() - started


def test_idle_stream_is_ended(guarded: Daemon) -> None:
    """A stream that stops sending is ended after the idle deadline, with a fixed message."""
    code, message, elapsed = asyncio.run(_idle_stream(guarded))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.stream_idle_seconds" in message
    assert IDLE_SECONDS - 0.2 < elapsed < IDLE_SECONDS + 5
