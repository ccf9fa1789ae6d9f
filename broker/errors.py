"""Domain errors: raised by services, core adapters and backends; mapped to gRPC in rpc/status.py.

They carry no grpc types. Messages are fixed sentences safe to show a caller: never key
material, plaintext, ciphertext or backend detail (that goes to the log under the request id).
"""

from __future__ import annotations

__all__ = [
    "DECRYPTION_FAILED_MESSAGE",
    "PERMISSION_DENIED_MESSAGE",
    "BrokerError",
    "ConfigError",
    "DecryptionFailedError",
    "InternalError",
    "InvalidRequestError",
    "KeyNotFoundError",
    "KeyStateError",
    "KeyStoreError",
    "KeyStoreReadOnlyError",
    "KeyStoreUnavailableError",
    "KmsAuthenticationError",
    "KmsError",
    "KmsInvalidCiphertextError",
    "KmsKeyNotFoundError",
    "KmsUnavailableError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "VerificationFailedError",
    "WrongKeyPurposeError",
]

DECRYPTION_FAILED_MESSAGE = "ciphertext could not be decrypted"
PERMISSION_DENIED_MESSAGE = "permission denied"


class BrokerError(Exception):
    """Base of every error the broker reports to a caller; `reason` is a stable word."""

    reason = "INTERNAL"
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        """Use the class's fixed message unless a specific, secret-free one is given."""
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        """The caller-facing message."""
        return str(self.args[0])


class InvalidRequestError(BrokerError):
    """The request is malformed or over a configured limit; the message names the limit."""

    reason = "INVALID_ARGUMENT"
    default_message = "invalid request"


class DecryptionFailedError(BrokerError):
    """Any failure to open an envelope; always the same message so nothing can be probed."""

    reason = "DECRYPTION_FAILED"
    default_message = DECRYPTION_FAILED_MESSAGE

    def __init__(self) -> None:
        """The message is fixed on purpose."""
        super().__init__(DECRYPTION_FAILED_MESSAGE)


class VerificationFailedError(BrokerError):
    """A signature, MAC, digest or password did not verify."""

    reason = "VERIFICATION_FAILED"
    default_message = "verification failed"


class UnauthenticatedError(BrokerError):
    """The caller's identity could not be established."""

    reason = "UNAUTHENTICATED"
    default_message = "caller could not be authenticated"


class PermissionDeniedError(BrokerError):
    """The policy denies the operation; the message never says which rule or key exists."""

    reason = "PERMISSION_DENIED"
    default_message = PERMISSION_DENIED_MESSAGE

    def __init__(self) -> None:
        """The message is fixed on purpose."""
        super().__init__(PERMISSION_DENIED_MESSAGE)


class KeyNotFoundError(BrokerError):
    """The logical key is not configured (reported only after authorization)."""

    reason = "KEY_NOT_FOUND"
    default_message = "key not found"


class KeyStateError(BrokerError):
    """The key or key version exists but is not in a state that allows the operation."""

    reason = "KEY_STATE"
    default_message = "key version is disabled"


class WrongKeyPurposeError(KeyStateError):
    """The key exists but serves another purpose (for example signing with an envelope key)."""

    reason = "WRONG_KEY_PURPOSE"
    default_message = "key does not support this operation"


class ResourceExhaustedError(BrokerError):
    """A rate limit or a resource budget is exhausted; retry later."""

    reason = "RESOURCE_EXHAUSTED"
    default_message = "resource exhausted; retry later"


class InternalError(BrokerError):
    """An unexpected failure; detail only in the log."""


class ConfigError(Exception):
    """Invalid configuration: one line naming the field and the fix (never a secret value)."""


class KmsError(BrokerError):
    """Base of errors a KMS backend reports."""

    reason = "KMS_ERROR"
    default_message = "key management service error"


class KmsUnavailableError(KmsError):
    """The KMS is unreachable, throttling or failing (retryable)."""

    reason = "KMS_UNAVAILABLE"
    default_message = "key management service unavailable; retry later"


class KmsAuthenticationError(KmsError):
    """The broker's own KMS credentials were refused: a configuration problem."""

    reason = "KMS_AUTHENTICATION"
    default_message = "key management service refused the broker's credentials"


class KmsKeyNotFoundError(KmsError):
    """The backend key named by a logical key's URI does not exist in the KMS."""

    reason = "KEY_NOT_FOUND"
    default_message = "key not found"


class KmsInvalidCiphertextError(KmsError):
    """The KMS rejected a wrapped DEK as invalid; reported to callers as a decryption failure."""

    reason = "DECRYPTION_FAILED"
    default_message = DECRYPTION_FAILED_MESSAGE


class KeyStoreError(BrokerError):
    """A key change could not be committed to the key store; nothing was changed."""

    reason = "KEYSTORE_UNAVAILABLE"
    default_message = "key store unavailable; no change was made"


class KeyStoreUnavailableError(KeyStoreError):
    """The key store cannot be reached or failed (retryable); reads keep working from memory."""


class KeyStoreReadOnlyError(KeyStoreError):
    """The key store refuses writes (read-only or full); an operator must act before retrying."""

    reason = "KEYSTORE_READ_ONLY"
    default_message = "key store is read-only or full; no change was made"
