"""The daemon's memory stays bounded under bursts of large calls and streams nobody reads.

Memory is read from /proc/PID/status of the daemon: VmHWM (the peak, reset through
/proc/PID/clear_refs before a burst) and VmRSS.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from support.daemon import MAX_MESSAGE, Daemon

from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc

MiB = 1 << 20
BURST = 100
PLAINTEXT = 4 * MiB
# The example sidecar's limit is 256 MiB: a burst may raise the peak that far, not beyond.
PEAK_GROWTH = 256 * MiB
SETTLE_SECONDS = 10
STREAM_GROWTH = 24 * MiB  # a stream nobody reads holds a few segments, whatever is sent
ENCRYPT_STREAM = "/keybroker.v1.EnvelopeService/EncryptStream"


def _status(pid: int, field: str) -> int:
    """One VmXXX field of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    """A dev daemon of its own, so other tests' allocations do not count."""
    d = Daemon(tmp_path_factory.mktemp("kb") / "state").start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def _channel(daemon: Daemon) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"unix:{daemon.socket}",
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


async def _warm(daemon: Daemon) -> None:
    """One call of the burst's size: lazy imports and the DEK are not part of the burst."""
    async with _channel(daemon) as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        await stub.Encrypt(pb.EncryptRequest(key="default", plaintext=bytes(PLAINTEXT)))


async def _burst(daemon: Daemon) -> list[grpc.StatusCode]:
    """100 concurrent 4 MiB Encrypts; the code of each."""
    request = pb.EncryptRequest(key="default", plaintext=bytes(PLAINTEXT))

    async def one(stub: envelope_pb2_grpc.EnvelopeServiceStub) -> grpc.StatusCode:
        try:
            await stub.Encrypt(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    async with _channel(daemon) as channel:
        stub = envelope_pb2_grpc.EnvelopeServiceStub(channel)
        return list(await asyncio.gather(*(one(stub) for _ in range(BURST))))


@pytest.mark.xfail(
    strict=True,
    reason="gRPC receives every request of a burst before the daemon reads one: the peak is "
    "set by the transport, not by server.request_memory_bytes "
    "(docs/operations.md, 'Slots, deadlines and memory')",
)
def test_burst_of_large_encrypts_is_bounded_and_returned(daemon: Daemon) -> None:
    """The peak stays within the sidecar budget, the excess is refused, memory comes back."""
    asyncio.run(_warm(daemon))
    before = _status(daemon.pid, "VmRSS")
    _reset_peak(daemon.pid)
    codes = asyncio.run(_burst(daemon))
    peak = _status(daemon.pid, "VmHWM")
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.count(grpc.StatusCode.OK) >= 8, codes
    assert peak - before < PEAK_GROWTH, (peak - before) / MiB
    time.sleep(SETTLE_SECONDS)
    after = _status(daemon.pid, "VmRSS")
    assert after < before * 1.2, (before / MiB, after / MiB)


async def _unread_stream(daemon: Daemon, total: int) -> int:
    """Send up to `total` plaintext bytes into an EncryptStream and read nothing; bytes sent."""
    chunk = pb.EncryptStreamRequest(chunk=bytes(MiB)).SerializeToString()
    start = pb.EncryptStreamRequest(start=pb.EncryptStreamStart(key="default"))
    sent = 0
    async with _channel(daemon) as channel:
        call = channel.stream_stream(ENCRYPT_STREAM)()
        await call.write(start.SerializeToString())
        try:
            while sent < total:
                await asyncio.wait_for(call.write(chunk), 2)
                sent += MiB
        except TimeoutError:
            pass
        await asyncio.sleep(1)
        call.cancel()
    return sent


def test_unread_stream_holds_bounded_memory(daemon: Daemon) -> None:
    """A client that writes a stream and never reads it makes the daemon hold a few segments."""
    before = _status(daemon.pid, "VmRSS")
    _reset_peak(daemon.pid)
    asyncio.run(_unread_stream(daemon, 128 * MiB))
    peak = _status(daemon.pid, "VmHWM")
    assert peak - before < STREAM_GROWTH, (peak - before) / MiB
