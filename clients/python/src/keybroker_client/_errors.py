"""The client's exception hierarchy and the one place that maps gRPC failures onto it.

The daemon sends a stable word in the trailing metadata key ``keybroker-error-reason``: a
value name of the proto's ``ErrorReason`` enum without its ``ERROR_REASON_`` prefix. Mapping
by that word first keeps the client independent of which status code the daemon
picks for a failure, and the status code is only the fallback.
"""

from __future__ import annotations

from typing import Any

import grpc

from ._gen import common_pb2

__all__ = [
    "REASON_METADATA_KEY",
    "REQUEST_ID_METADATA_KEY",
    "AuthenticationError",
    "BrokerUnavailableError",
    "DecryptionError",
    "EncryptionError",
    "HashingError",
    "InvalidParameterError",
    "KMSAuthenticationError",
    "KMSError",
    "KMSKeyNotFoundError",
    "KMSUnavailableError",
    "KeyDerivationError",
    "KeyStateError",
    "KeybrokerError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SigningError",
    "TokenGenerationError",
    "UnsupportedOperationError",
    "VerificationError",
    "error_from_item",
    "error_from_rpc",
]

REASON_METADATA_KEY = "keybroker-error-reason"
REQUEST_ID_METADATA_KEY = "keybroker-request-id"


class KeybrokerError(Exception):
    """Base of every error the client raises, so one ``except`` catches them all."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        request_id: str = "",
    ) -> None:
        """Keep the server's status code, reason word and request id next to the message."""
        super().__init__(message)
        self.code: grpc.StatusCode | None = code
        self.reason: str = reason
        self.request_id: str = request_id
        """The daemon's id for the failed call; its log has the detail under this id."""

    @property
    def message(self) -> str:
        """The human-readable message (the server's status details for remote failures)."""
        return str(self.args[0]) if self.args else ""


class EncryptionError(KeybrokerError):
    """Sealing failed for a reason the caller cannot fix by changing the request."""


class DecryptionError(KeybrokerError):
    """The envelope could not be opened: wrong context, tampered or not an envelope."""


class SigningError(KeybrokerError):
    """A signing operation failed."""


class VerificationError(KeybrokerError):
    """A signature, MAC, digest or password did not verify."""


class HashingError(KeybrokerError):
    """A hashing operation failed."""


class KeyDerivationError(KeybrokerError):
    """A key-derivation operation failed."""


class TokenGenerationError(KeybrokerError):
    """A token could not be generated."""


class KMSError(KeybrokerError):
    """The key management service behind the broker reported a failure."""


class KMSUnavailableError(KMSError):
    """The KMS is unreachable or throttling; retrying later may succeed."""


class KMSAuthenticationError(KMSError):
    """The KMS refused the broker's credentials: a broker configuration problem."""


class KMSKeyNotFoundError(KMSError):
    """The named key does not exist (reported only after authorization)."""


class PermissionDeniedError(KeybrokerError):
    """The broker's policy does not let this caller perform the operation."""


class AuthenticationError(PermissionDeniedError):
    """The broker could not establish the caller's identity."""


class InvalidParameterError(KeybrokerError):
    """The request is malformed or over a configured limit; the message names it."""


class KeyStateError(KeybrokerError):
    """The key exists but cannot be used this way (disabled version, wrong purpose, lease spent)."""


class ResourceExhaustedError(KeybrokerError):
    """A rate limit or budget is exhausted; retry later."""


class BrokerUnavailableError(KeybrokerError):
    """The daemon could not be reached or did not answer in time."""


class UnsupportedOperationError(KeybrokerError):
    """The daemon does not implement this operation (an older daemon, or a disabled feature)."""


# Keyed by the proto's ErrorReason, so only a word the daemon can send can be mapped. None: the
# word does not pick a class; the status code does, else the operation's own class.
_BY_ERROR_REASON: dict[common_pb2.ErrorReason.ValueType, type[KeybrokerError] | None] = {
    common_pb2.ERROR_REASON_INTERNAL: None,
    common_pb2.ERROR_REASON_INVALID_ARGUMENT: InvalidParameterError,
    common_pb2.ERROR_REASON_DECRYPTION_FAILED: DecryptionError,
    common_pb2.ERROR_REASON_VERIFICATION_FAILED: VerificationError,
    common_pb2.ERROR_REASON_UNAUTHENTICATED: AuthenticationError,
    common_pb2.ERROR_REASON_PERMISSION_DENIED: PermissionDeniedError,
    common_pb2.ERROR_REASON_KEY_NOT_FOUND: KMSKeyNotFoundError,
    common_pb2.ERROR_REASON_KEY_STATE: KeyStateError,
    common_pb2.ERROR_REASON_WRONG_KEY_PURPOSE: KeyStateError,
    common_pb2.ERROR_REASON_RESOURCE_EXHAUSTED: ResourceExhaustedError,
    common_pb2.ERROR_REASON_RATE_LIMITED: ResourceExhaustedError,
    common_pb2.ERROR_REASON_KMS_ERROR: KMSError,
    common_pb2.ERROR_REASON_KMS_UNAVAILABLE: KMSUnavailableError,
    common_pb2.ERROR_REASON_KMS_AUTHENTICATION: KMSAuthenticationError,
    common_pb2.ERROR_REASON_KEYSTORE_UNAVAILABLE: KMSError,
    common_pb2.ERROR_REASON_KEYSTORE_READ_ONLY: KMSError,
}

_REASON_PREFIX = "ERROR_REASON_"


def _by_wire_word(
    table: dict[common_pb2.ErrorReason.ValueType, type[KeybrokerError] | None],
) -> dict[str, type[KeybrokerError] | None]:
    """Key the table by the word the daemon sends: the value name without its prefix."""
    return {
        common_pb2.ErrorReason.Name(value).removeprefix(_REASON_PREFIX): cls
        for value, cls in table.items()
    }


_BY_REASON = _by_wire_word(_BY_ERROR_REASON)

_BY_CODE: dict[grpc.StatusCode, type[KeybrokerError]] = {
    grpc.StatusCode.UNAVAILABLE: BrokerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: BrokerUnavailableError,
    grpc.StatusCode.UNIMPLEMENTED: UnsupportedOperationError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidParameterError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: KMSKeyNotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

# gRPC's own words when a message is over a channel's or the daemon's size limit, and the name
# the daemon gives the streaming call in its own refusals.
_TRANSPORT_TOO_LARGE = "larger than max"
_DAEMON_STREAM_ADVICE = "EncryptStream"
_STREAM_METHODS: dict[type[KeybrokerError], str] = {
    EncryptionError: "encrypt_stream",
    DecryptionError: "decrypt_stream",
}


def _classify(
    code: grpc.StatusCode | None, reason: str, operation_error: type[KeybrokerError]
) -> type[KeybrokerError]:
    """Pick the class: the reason word wins, then the status code, then the operation's own."""
    by_reason = _BY_REASON.get(reason)
    if by_reason is not None:
        return by_reason
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    return operation_error


def _unavailable_message(code: grpc.StatusCode | None, details: str, target: str | None) -> str:
    """Say what to check, since an unreachable daemon is almost always a setup problem."""
    where = f" at {target}" if target else ""
    what = "did not answer in time" if code == grpc.StatusCode.DEADLINE_EXCEEDED else "unreachable"
    return (
        f"keybroker daemon{where} {what} ({details or 'no details'}); check that the "
        "daemon is running and that KEYBROKER_SOCKET names its socket"
    )


def _too_large(
    code: grpc.StatusCode | None, reason: str, details: str, operation_error: type[KeybrokerError]
) -> str | None:
    """The message for a request too large for one call, naming this client's streaming method.

    gRPC refuses an oversize message with RESOURCE_EXHAUSTED, which reads as "retry later";
    retrying cannot help, so it becomes InvalidParameterError with this message.
    """
    stream = _STREAM_METHODS.get(operation_error, "encrypt_stream")
    refused_by_grpc = code == grpc.StatusCode.RESOURCE_EXHAUSTED and not reason
    if refused_by_grpc and _TRANSPORT_TOO_LARGE in details:
        return (
            f"request too large for one call to the keybroker daemon ({details}); one call "
            f"carries at most server.max_plaintext_bytes (4 MiB by default): use {stream} "
            "for large payloads"
        )
    if reason == "INVALID_ARGUMENT" and _DAEMON_STREAM_ADVICE in details:
        return f"{details} (in keybroker_client: {stream})"
    return None


def _metadata_value(metadata: Any, wanted: str) -> str:  # noqa: ANN401 - tuples or aio Metadata
    """Find one value in trailing metadata of either grpc flavour."""
    for key, value in metadata or ():
        if key == wanted:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def error_from_rpc(
    error: grpc.RpcError,
    operation_error: type[KeybrokerError],
    *,
    target: str | None = None,
) -> KeybrokerError:
    """Turn a sync or aio ``grpc.RpcError`` into the client exception a caller can act on."""
    code_of = getattr(error, "code", None)
    code: grpc.StatusCode | None = code_of() if callable(code_of) else None
    details_of = getattr(error, "details", None)
    details = (details_of() if callable(details_of) else None) or ""
    metadata_of = getattr(error, "trailing_metadata", None)
    metadata = metadata_of() if callable(metadata_of) else None
    reason = _metadata_value(metadata, REASON_METADATA_KEY)
    cls = _classify(code, reason, operation_error)
    if cls is BrokerUnavailableError:
        details = _unavailable_message(code, details, target)
    elif (too_large := _too_large(code, reason, details, operation_error)) is not None:
        cls, details = InvalidParameterError, too_large
    return cls(
        details or (code.name if code else "unknown error"),
        code=code,
        reason=reason,
        request_id=_metadata_value(metadata, REQUEST_ID_METADATA_KEY),
    )


def error_from_item(
    item: common_pb2.ItemError, operation_error: type[KeybrokerError]
) -> KeybrokerError:
    """Turn one failed batch item into an exception instance, through the same table."""
    code = _CODE_BY_NUMBER.get(item.code)
    cls = _classify(code, item.reason, operation_error)
    return cls(item.message or item.reason or "batch item failed", code=code, reason=item.reason)
