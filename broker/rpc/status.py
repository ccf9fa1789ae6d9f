"""The one table mapping domain errors to gRPC status codes (docs/architecture.md)."""

from __future__ import annotations

import grpc

from broker.errors import (
    BrokerError,
    DecryptionFailedError,
    InvalidRequestError,
    KeyNotFoundError,
    KeyStateError,
    KeyStoreReadOnlyError,
    KeyStoreUnavailableError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    VerificationFailedError,
)

__all__ = ["REASON_METADATA_KEY", "REQUEST_ID_METADATA_KEY", "Status", "status_for"]

REASON_METADATA_KEY = "keybroker-error-reason"
REQUEST_ID_METADATA_KEY = "keybroker-request-id"

Status = tuple[grpc.StatusCode, str, str]

# first match wins: subclasses before their bases
_TABLE: tuple[tuple[type[BrokerError], grpc.StatusCode], ...] = (
    (DecryptionFailedError, grpc.StatusCode.INVALID_ARGUMENT),
    (KmsInvalidCiphertextError, grpc.StatusCode.INVALID_ARGUMENT),
    (VerificationFailedError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (KmsAuthenticationError, grpc.StatusCode.PERMISSION_DENIED),
    (KeyNotFoundError, grpc.StatusCode.NOT_FOUND),
    (KmsKeyNotFoundError, grpc.StatusCode.NOT_FOUND),
    (KeyStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (KeyStoreReadOnlyError, grpc.StatusCode.FAILED_PRECONDITION),
    (KeyStoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (KmsUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (KmsError, grpc.StatusCode.UNAVAILABLE),
)
_INTERNAL: Status = (grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")


def status_for(exc: BaseException) -> Status:
    """(code, caller-facing message, reason) for any exception; unknown ones are INTERNAL."""
    if isinstance(exc, BrokerError):
        for cls, code in _TABLE:
            if isinstance(exc, cls):
                return code, exc.message, exc.reason
    return _INTERNAL
