"""One caller holds at most `server.max_inflight_per_caller` calls; others are still served."""

from __future__ import annotations

import asyncio

import grpc

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

SHARE = 4
CONFIG = f"""
[server]
state_dir = "{{state}}"
allow_root = true
max_inflight_per_caller = {SHARE}

[[listeners]]
kind = "unix"
path = "{{run}}/app-a.sock"
identity = "app-a"

[[listeners]]
kind = "unix"
path = "{{run}}/app-b.sock"
identity = "app-b"

[keys.default]
uri = "local://default"
"""
ENCRYPT_STREAM = "/keybroker.v1.EnvelopeService/EncryptStream"


async def _open_streams(socket: str, count: int) -> list[grpc.aio.StreamStreamCall]:
    """`count` EncryptStreams that sent their start; each holds a call in the pipeline."""
    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
    calls = []
    for _ in range(count):
        call = channel.stream_stream(ENCRYPT_STREAM)()
        await call.write(start.SerializeToString())
        calls.append(call)
    return calls


async def _header_or_code(call: grpc.aio.StreamStreamCall) -> grpc.StatusCode | None:
    """None once the stream's header arrives (it is in the pipeline), else how it ended."""
    try:
        await call.read()
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return None


async def _over_share(run: str) -> tuple[list[grpc.StatusCode | None], str | None, bool]:
    """Caller a opens one stream over its share; caller b encrypts meanwhile."""
    calls = await _open_streams(f"{run}/app-a.sock", SHARE + 1)
    ended = list(await asyncio.gather(*(_header_or_code(c) for c in calls)))
    over = [c for c, code in zip(calls, ended, strict=True) if code is not None]
    async with grpc.aio.insecure_channel(f"unix:{run}/app-b.sock") as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        reply = await stub.Encrypt(pb.EncryptRequest(key="default", plaintext=b"x"), timeout=5)
    trailers = await over[0].trailing_metadata() if over else None
    reason = dict(trailers or ()).get("keybroker-error-reason")
    for call in calls:
        call.cancel()
    return ended, reason, bool(reply.ciphertext)


def test_caller_over_its_share_is_refused_while_another_is_served(configured) -> None:
    """The stream over caller a's share gets RESOURCE_EXHAUSTED; caller b's Encrypt succeeds."""
    daemon = configured(CONFIG, socket="app-a.sock").start()
    ended, reason, served = asyncio.run(_over_share(str(daemon.socket.parent)))
    assert ended.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 1
    assert ended.count(None) == SHARE
    assert reason == "RESOURCE_EXHAUSTED"
    assert served
