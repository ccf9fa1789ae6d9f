"""Client-side CLI commands: encrypt, decrypt and healthcheck over the daemon's socket."""

from __future__ import annotations

import base64
import binascii
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.core.wire import FORMAT_STREAM
from broker.daemon.health import health_names
from broker.rpc.gen import envelope_pb2 as pb
from broker.rpc.gen import envelope_pb2_grpc
from broker.rpc.status import REASON_METADATA_KEY

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["CliError", "client_socket", "decrypt", "encrypt", "healthcheck"]

T = TypeVar("T")
UNARY_LIMIT = 4 << 20
CHUNK = 1 << 20
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


class CliError(Exception):
    """A failure to report on one line, exit code 1."""


def client_socket(explicit: str | None, env: Mapping[str, str] = os.environ) -> Path:
    """The socket a client command talks to: flag, KEYBROKER_SOCKET, ./.keybroker, /run."""
    if explicit:
        return Path(explicit)
    if env.get("KEYBROKER_SOCKET"):
        return Path(env["KEYBROKER_SOCKET"])
    dev = Path(".keybroker/keybroker.sock")
    return dev if dev.exists() else Path("/run/keybroker/keybroker.sock")


def _channel(socket: Path) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{socket.absolute()}", options=_OPTIONS)


def _explain(exc: grpc.RpcError, socket: Path) -> CliError:
    call: grpc.Call = exc  # type: ignore[assignment]  # sync-stub errors are also grpc.Call
    code = call.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        keys = {str(item[0]) for item in call.trailing_metadata() or ()}
        if REASON_METADATA_KEY not in keys:
            return CliError(
                f"cannot reach the daemon at {socket}; is `keybroker serve` running? "
                "(set KEYBROKER_SOCKET or --socket)"
            )
    return CliError(f"{call.details()} ({code.name})")


class _Progress:
    """Bytes-processed counter on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._done = 0
        self._on = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self._done += n
        if self._on:
            sys.stderr.write(f"\r{self._label}: {self._done / (1 << 20):8.1f} MiB")

    def close(self) -> None:
        if self._on:
            sys.stderr.write("\n")


def _read_chunks(first: bytes, source: BinaryIO, progress: _Progress) -> Iterator[bytes]:
    progress.add(len(first))
    yield first
    while chunk := source.read(CHUNK):
        progress.add(len(chunk))
        yield chunk


def encrypt(  # noqa: PLR0913 - mirrors the command-line flags
    socket: Path, key: str, context: dict[str, str], *, store: bool, binary: bool, timeout: float
) -> None:
    """Read stdin, write the envelope (base64 text unless binary); large input is streamed."""
    data = sys.stdin.buffer.read(UNARY_LIMIT + 1)
    stub = envelope_pb2_grpc.EnvelopeServiceStub(_channel(socket))
    try:
        if len(data) <= UNARY_LIMIT:
            req = pb.EncryptRequest(key=key, plaintext=data, context=context, store_context=store)
            envelope = stub.Encrypt(req, timeout=timeout).ciphertext
        else:
            start = pb.EncryptStreamStart(key=key, context=context, store_context=store)
            progress = _Progress("encrypted")
            requests = (
                pb.EncryptStreamRequest(chunk=c)
                for c in _read_chunks(data, sys.stdin.buffer, progress)
            )
            first = pb.EncryptStreamRequest(start=start)
            responses = stub.EncryptStream(_prepend(first, requests))
            envelope = b"".join(r.chunk for r in responses)
            progress.close()
    except grpc.RpcError as exc:
        raise _explain(exc, socket) from None
    sys.stdout.buffer.write(envelope if binary else base64.b64encode(envelope) + b"\n")


def _prepend(first: T, rest: Iterator[T]) -> Iterator[T]:
    yield first
    yield from rest


def decrypt(socket: Path, context: dict[str, str], *, binary: bool, timeout: float) -> None:
    """Read an envelope from stdin (base64 text unless binary) and write the plaintext."""
    raw = sys.stdin.buffer.read()
    if not binary:
        try:
            raw = base64.b64decode(b"".join(raw.split()), validate=True)
        except binascii.Error:
            raise CliError("input is not base64 text; use --binary for raw envelopes") from None
    stub = envelope_pb2_grpc.EnvelopeServiceStub(_channel(socket))
    try:
        if raw[:1] != bytes([FORMAT_STREAM]) or len(raw) <= UNARY_LIMIT:
            req = pb.DecryptRequest(ciphertext=raw, context=context)
            sys.stdout.buffer.write(stub.Decrypt(req, timeout=timeout).plaintext)
            return
        first = pb.DecryptStreamRequest(start=pb.DecryptStreamStart(context=context))
        chunks = (
            pb.DecryptStreamRequest(chunk=raw[i : i + CHUNK]) for i in range(0, len(raw), CHUNK)
        )
        plaintext = b"".join(r.chunk for r in stub.DecryptStream(_prepend(first, chunks)))
    except grpc.RpcError as exc:
        raise _explain(exc, socket) from None
    sys.stdout.buffer.write(plaintext)


def healthcheck(socket: Path, timeout: float, *, deep: bool = False) -> int:
    """0 when the daemon (with `deep`, every component it reports) is SERVING, else 1."""
    stub = health_pb2_grpc.HealthStub(_channel(socket))
    try:
        components = _components(stub, timeout) if deep else [("", _status(stub, "", timeout))]
    except grpc.RpcError as exc:
        print(f"keybroker: {_explain(exc, socket)}", file=sys.stderr)
        return 1
    for component, status in components:
        print(f"{component}: {status}" if component else status)
    return 0 if all(status == "SERVING" for _, status in components) else 1


def _status(stub: health_pb2_grpc.HealthStub, name: str, timeout: float) -> str:
    """The status the daemon reports for one health name (`""`: the daemon as a whole)."""
    reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _components(stub: health_pb2_grpc.HealthStub, timeout: float) -> list[tuple[str, str]]:
    """(component, status) of each name the daemon reports; it answers NOT_FOUND for the rest."""
    found = []
    for component, name in health_names():
        try:
            found.append((component, _status(stub, name, timeout)))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
    return found
