"""Every RPC of every keybroker service, called with raw bytes, and valid requests to seed them.

The methods come from the generated descriptors in broker/rpc/gen, so a new RPC is fuzzed as
soon as it is generated. A request-streaming call's bytes are a sequence of frames, each a
big-endian u16 length and that many bytes, one message per frame (at most MAX_FRAMES).
"""

from __future__ import annotations

import importlib
import pkgutil
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor

import broker.rpc.gen

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import grpc
    from google.protobuf.descriptor import Descriptor, MethodDescriptor
    from google.protobuf.message import Message

__all__ = ["MAX_FRAMES", "Method", "frames", "methods", "seed_requests"]

MAX_FRAMES = 16
_U16 = struct.Struct(">H")
# The dev daemon's keys: signing and HMAC calls get theirs, every other call gets `default`.
_SERVICE_KEYS = {"SigningService": "signing", "HashingService": "hmac"}
_STRINGS = {
    "password": "correct horse battery staple",
    "field": "email",
    "tenant": "acme",
    "pepper_key": "",
    "reseal_key": "",
}
_BYTES = {"salt": b"\x5a" * 16, "label": b""}
_NUMBERS = {"length": 32, "iterations": 10_000}


@dataclass(frozen=True)
class Method:
    """One RPC: its path, whether each side streams, and its request message class."""

    path: str
    client_streaming: bool
    server_streaming: bool
    request: type[Message]
    response: type[Message]
    service: str

    @property
    def name(self) -> str:
        """`Service/Method`, for reports."""
        return self.path.rsplit(".", 1)[-1]

    def call(self, channel: grpc.Channel, payload: bytes, timeout: float) -> list[bytes]:
        """Send raw bytes (frames for a request stream); the raw replies."""
        kinds: dict[tuple[bool, bool], Callable[..., Any]] = {
            (False, False): channel.unary_unary,
            (False, True): channel.unary_stream,
            (True, False): channel.stream_unary,
            (True, True): channel.stream_stream,
        }
        stub = kinds[self.client_streaming, self.server_streaming](self.path)
        request = iter(frames(payload)) if self.client_streaming else payload
        reply = stub(request, timeout=timeout)
        return [bytes(r) for r in reply] if self.server_streaming else [bytes(reply)]


def methods() -> list[Method]:
    """Every method of every service in broker/rpc/gen, sorted by path so indices are stable."""
    found = []
    for info in pkgutil.iter_modules(broker.rpc.gen.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"broker.rpc.gen.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            found += [_method(service.name, service.full_name, m) for m in service.methods]
    return sorted(found, key=lambda m: m.path)


def _method(service: str, full_name: str, method: MethodDescriptor) -> Method:
    return Method(
        path=f"/{full_name}/{method.name}",
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
        request=message_factory.GetMessageClass(method.input_type),
        response=message_factory.GetMessageClass(method.output_type),
        service=service,
    )


def frames(payload: bytes) -> list[bytes]:
    """Split a request stream's bytes into its messages."""
    out, pos = [], 0
    while pos < len(payload) and len(out) < MAX_FRAMES:
        (size,) = _U16.unpack(payload[pos : pos + 2].ljust(2, b"\0"))
        out.append(payload[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return out


def framed(messages: list[bytes]) -> bytes:
    """The inverse of `frames`."""
    return b"".join(_U16.pack(len(m)) + m for m in messages)


def fill(message: Message, key: str, real: dict[str, object]) -> Message:
    """Give every field a plausible value: the call's key, `real` values by field name."""
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and field is not oneof.fields[0]:
            continue  # one member of each oneof: the first
        _fill_field(message, field, key, real)
    return message


def _fill_field(
    message: Message, field: FieldDescriptor, key: str, real: dict[str, object]
) -> None:
    name, value = field.name, getattr(message, field.name)
    if _is_map(field.message_type):
        value.update({"tenant": "acme"})
    elif field.is_repeated:
        if field.message_type is not None:
            fill(value.add(), key, real)
    elif field.message_type is not None:
        if field.message_type.full_name != "google.protobuf.Timestamp":
            fill(value, key, real)
            value.SetInParent()
    elif name in real:
        setattr(message, name, real[name])
    else:
        setattr(message, name, _scalar(field, key))


def _is_map(descriptor: Descriptor | None) -> bool:
    return descriptor is not None and descriptor.GetOptions().map_entry


def _scalar(field: FieldDescriptor, key: str) -> object:
    """A valid value for a scalar field, by name and then by type."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return key if field.name in ("key", "destination_key") else _STRINGS.get(field.name, "fuzz")
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _BYTES.get(field.name, b"keybroker fuzz seed")
    if field.type == FieldDescriptor.TYPE_BOOL:
        return False
    if field.type == FieldDescriptor.TYPE_ENUM:
        return 1  # the first value after _UNSPECIFIED
    return _NUMBERS.get(field.name, 0)


def request_for(method: Method, real: dict[str, object]) -> Message:
    """A filled request for one method."""
    return fill(method.request(), _SERVICE_KEYS.get(method.service, "default"), real)


def seed_requests(
    methods_: list[Method], real: dict[str, object], chunks: dict[str, list[bytes]]
) -> Iterator[tuple[int, bytes]]:
    """(method index, payload): an empty request and a filled one for every method.

    A request stream also gets its filled first message followed by `chunks[path]`.
    """
    for index, method in enumerate(methods_):
        filled = request_for(method, real).SerializeToString()
        if not method.client_streaming:
            yield index, b""
            yield index, filled
            continue
        more = [method.request(chunk=c).SerializeToString() for c in chunks.get(method.path, [])]
        yield index, b""
        yield index, framed([filled])
        yield index, framed([filled, *more])
