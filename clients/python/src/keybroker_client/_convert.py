"""Request building and response conversion shared by the sync and async clients.

Everything here is pure (no I/O, no grpc calls), so both clients validate and convert
identically and the public API never exposes protobuf types.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Protocol, TypeAlias

from ._errors import (
    DecryptionError,
    EncryptionError,
    InvalidParameterError,
    KeybrokerError,
    error_from_item,
)
from ._gen import envelope_pb2 as env_pb
from ._gen import key_admin_pb2 as admin_pb
from ._keys import KeyInfo, KeyVersionInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

    from google.protobuf.descriptor import EnumDescriptor

__all__ = [
    "Context",
    "StreamResponse",
    "check_bytes",
    "check_context",
    "check_count",
    "check_key",
    "check_sequence",
    "decrypt_batch_request",
    "decrypt_batch_results",
    "decrypt_request",
    "decrypt_stream_chunk",
    "decrypt_stream_start",
    "describe_key_request",
    "encrypt_batch_request",
    "encrypt_batch_results",
    "encrypt_request",
    "encrypt_stream_chunk",
    "encrypt_stream_start",
    "generate_data_key_request",
    "key_info",
    "lease_request",
    "list_keys_request",
    "open_seed_envelope_request",
    "rewrap_request",
    "rotate_key_request",
]

Context: TypeAlias = Mapping[str, str] | None


class StreamResponse(Protocol):
    """What both streaming RPCs answer with: the next bytes of output."""

    @property
    def chunk(self) -> bytes:
        """The next output bytes."""
        ...


def check_bytes(name: str, value: object) -> bytes:
    """Refuse text and other non-binary input at the boundary with a message naming the field."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def check_key(key: object, name: str = "key") -> str:
    """Keys are names; catching a wrong type here beats a protobuf TypeError later."""
    if not isinstance(key, str):
        raise TypeError(f"{name} must be str, not {type(key).__name__}")
    return key


def check_context(context: Context) -> dict[str, str]:
    """Contexts are str→str; the daemon checks sizes and counts against its limits."""
    if context is None:
        return {}
    pairs = dict(context)
    for name, value in pairs.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("context must map str to str")
    return pairs


_UINT32_MAX = 2**32 - 1


def check_count(name: str, value: object) -> int:
    """Sizes and counts are positive ints; zero is refused since the wire reads it as "default"."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= _UINT32_MAX:
        raise InvalidParameterError(
            f"{name} must be a positive integer, got {value}", reason="INVALID_ARGUMENT"
        )
    return value


def encrypt_request(
    plaintext: object, key: str, context: Context, *, store_context: bool = False
) -> env_pb.EncryptRequest:
    """Build an Encrypt request (also one EncryptBatch item)."""
    return env_pb.EncryptRequest(
        key=check_key(key),
        plaintext=check_bytes("plaintext", plaintext),
        context=check_context(context),
        store_context=bool(store_context),
    )


def decrypt_request(ciphertext: object, context: Context) -> env_pb.DecryptRequest:
    """Build a Decrypt request (also one DecryptBatch item)."""
    return env_pb.DecryptRequest(
        ciphertext=check_bytes("ciphertext", ciphertext), context=check_context(context)
    )


def rewrap_request(
    ciphertext: object, context: Context, destination_key: str | None
) -> env_pb.RewrapRequest:
    """Build a Rewrap request; no destination means the envelope's own key."""
    return env_pb.RewrapRequest(
        ciphertext=check_bytes("ciphertext", ciphertext),
        context=check_context(context),
        destination_key="" if destination_key is None else check_key(destination_key),
    )


def open_seed_envelope_request(
    envelope: object, key: str, reseal_key: str | None, context: Context
) -> env_pb.OpenSeedEnvelopeRequest:
    """Build an OpenSeedEnvelope request; the envelope is the seed's base64 text, str or bytes."""
    if isinstance(envelope, str):
        if not envelope.isascii():
            raise InvalidParameterError(
                "envelope must be the base64 text of a seed envelope", reason="INVALID_ARGUMENT"
            )
        envelope = envelope.encode("ascii")
    return env_pb.OpenSeedEnvelopeRequest(
        envelope=check_bytes("envelope", envelope),
        key=check_key(key),
        reseal_key="" if reseal_key is None else check_key(reseal_key, "reseal_key"),
        context=check_context(context),
    )


def generate_data_key_request(key: str, context: Context) -> env_pb.GenerateDataKeyRequest:
    """Build a GenerateDataKey request that returns the plaintext key too."""
    return env_pb.GenerateDataKeyRequest(key=check_key(key), context=check_context(context))


def lease_request(key: str, context: Context) -> env_pb.LeaseDataKeyRequest:
    """Build a LeaseDataKey request."""
    return env_pb.LeaseDataKeyRequest(key=check_key(key), context=check_context(context))


def encrypt_batch_request(
    plaintexts: Sequence[bytes], key: str, context: Context
) -> env_pb.EncryptBatchRequest:
    """Build an EncryptBatch request: every item under the same key and context."""
    check_sequence("plaintexts", plaintexts)
    return env_pb.EncryptBatchRequest(items=[encrypt_request(p, key, context) for p in plaintexts])


def decrypt_batch_request(
    ciphertexts: Sequence[bytes], context: Context
) -> env_pb.DecryptBatchRequest:
    """Build a DecryptBatch request: every item with the same context."""
    check_sequence("ciphertexts", ciphertexts)
    return env_pb.DecryptBatchRequest(items=[decrypt_request(c, context) for c in ciphertexts])


def check_sequence(name: str, items: object) -> None:
    """A bare bytes value is a sequence of ints; refuse it instead of sending single bytes."""
    if isinstance(items, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"{name} must be a sequence of bytes items, not a single value")


def encrypt_stream_start(
    key: str, context: Context, *, store_context: bool = False
) -> env_pb.EncryptStreamRequest:
    """Build the first EncryptStream message, which carries the parameters."""
    start = env_pb.EncryptStreamStart(
        key=check_key(key), context=check_context(context), store_context=bool(store_context)
    )
    return env_pb.EncryptStreamRequest(start=start)


def decrypt_stream_start(context: Context) -> env_pb.DecryptStreamRequest:
    """Build the first DecryptStream message, which carries the context."""
    start = env_pb.DecryptStreamStart(context=check_context(context))
    return env_pb.DecryptStreamRequest(start=start)


def encrypt_stream_chunk(chunk: bytes) -> env_pb.EncryptStreamRequest:
    """Wrap one plaintext chunk for EncryptStream."""
    return env_pb.EncryptStreamRequest(chunk=chunk)


def decrypt_stream_chunk(chunk: bytes) -> env_pb.DecryptStreamRequest:
    """Wrap one envelope chunk for DecryptStream."""
    return env_pb.DecryptStreamRequest(chunk=chunk)


def describe_key_request(key: str) -> admin_pb.DescribeKeyRequest:
    """Build a DescribeKey request."""
    return admin_pb.DescribeKeyRequest(key=check_key(key))


def list_keys_request() -> admin_pb.ListKeysRequest:
    """Build a ListKeys request."""
    return admin_pb.ListKeysRequest()


def rotate_key_request(key: str) -> admin_pb.RotateKeyRequest:
    """Build a RotateKey request."""
    return admin_pb.RotateKeyRequest(key=check_key(key))


def encrypt_batch_results(
    response: env_pb.EncryptBatchResponse,
) -> list[bytes | KeybrokerError]:
    """Envelopes in request order, failed items as exception instances."""
    return [
        error_from_item(r.error, EncryptionError)
        if r.WhichOneof("result") == "error"
        else r.response.ciphertext
        for r in response.results
    ]


def decrypt_batch_results(
    response: env_pb.DecryptBatchResponse,
) -> list[bytes | KeybrokerError]:
    """Plaintexts in request order, failed items as exception instances."""
    return [
        error_from_item(r.error, DecryptionError)
        if r.WhichOneof("result") == "error"
        else r.response.plaintext
        for r in response.results
    ]


def _enum_word(enum: EnumDescriptor, value: int, prefix: str) -> str:
    """``KEY_PURPOSE_ENVELOPE`` → ``envelope``: readable without importing protobuf enums."""
    found = enum.values_by_number.get(value)
    if found is None:  # a newer daemon may send a value this client does not know
        return f"unknown_{value}"
    return found.name.removeprefix(prefix).lower()


def key_info(key: admin_pb.Key) -> KeyInfo:
    """Convert the protobuf key description to the public frozen dataclass."""
    versions = tuple(
        KeyVersionInfo(
            version=v.version,
            state=_enum_word(admin_pb.KeyVersionState.DESCRIPTOR, v.state, "KEY_VERSION_STATE_"),
            created=v.create_time.ToDatetime(tzinfo=UTC) if v.HasField("create_time") else None,
        )
        for v in key.versions
    )
    return KeyInfo(
        name=key.name,
        uri=key.uri,
        backend=key.backend,
        purpose=_enum_word(admin_pb.KeyPurpose.DESCRIPTOR, key.purpose, "KEY_PURPOSE_"),
        algorithm=key.algorithm,
        current_version=key.current_version,
        versions=versions,
        rotatable=key.rotatable,
    )
