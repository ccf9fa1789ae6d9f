"""The seed's exception hierarchy, each class also under the matching ``keybroker_client`` class.

Every class here derives from ``ECLCryptoError`` exactly as the seed's tree shows, and takes
``(message, cause=None)``: ``cause`` is kept as ``.cause`` and chained as ``__cause__``. Each
one is also a subclass of the ``keybroker_client`` class of the same meaning, so code that
catches ``keybroker_client.DecryptionError`` (or ``KeybrokerError``) keeps catching what the
compat layer raises.

A few classes below the seed's tree name failures the seed did not have (an unreachable
broker, a policy refusal) or must satisfy two seed ``except`` clauses at once: a password,
digest or MAC mismatch is a ``HashingError`` (as the seed documents) and a
``VerificationError`` (as ``keybroker_client`` reports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keybroker_client import _errors as _kb

if TYPE_CHECKING:
    import grpc

__all__ = [
    "AuthenticationError",
    "BrokerUnavailableError",
    "DEKCacheError",
    "DecryptionError",
    "ECLCryptoError",
    "EncryptionError",
    "EnvelopeDecryptionError",
    "EnvelopeEncryptionError",
    "EnvelopeError",
    "HashMismatchError",
    "HashingError",
    "InvalidParameterError",
    "KMSAuthenticationError",
    "KMSError",
    "KMSKeyNotFoundError",
    "KMSUnavailableError",
    "KeyDerivationError",
    "KeyGenerationError",
    "KeyStateError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SigningError",
    "TokenGenerationError",
    "UnsupportedBackendError",
    "UnsupportedOperationError",
    "VerificationError",
]


class ECLCryptoError(_kb.KeybrokerError):
    """Base of every compat exception: ``except ECLCryptoError`` catches any of them."""

    def __init__(
        self,
        message: str = "",
        cause: BaseException | None = None,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        request_id: str = "",
    ) -> None:
        """Keep the seed's ``cause`` (also as ``__cause__``) beside keybroker's call details."""
        super().__init__(message, code=code, reason=reason, request_id=request_id)
        self.cause: BaseException | None = cause
        if cause is not None:
            self.__cause__ = cause


class EncryptionError(ECLCryptoError, _kb.EncryptionError):
    """Encryption failed (AES-GCM, RSA-OAEP, or sealing in the broker)."""


class DecryptionError(ECLCryptoError, _kb.DecryptionError):
    """Wrong key, corrupted data or mismatched associated data or context."""


class SigningError(ECLCryptoError, _kb.SigningError):
    """A signature could not be made."""


class VerificationError(ECLCryptoError, _kb.VerificationError):
    """A signature is invalid; verify functions raise instead of returning False."""


class HashingError(ECLCryptoError, _kb.HashingError):
    """Hashing failed, or a password, digest or MAC did not match."""


class KeyDerivationError(ECLCryptoError, _kb.KeyDerivationError):
    """HKDF or PBKDF2 could not derive the key asked for."""


class KeyGenerationError(ECLCryptoError):
    """A key or key pair could not be generated."""


class TokenGenerationError(ECLCryptoError, _kb.TokenGenerationError):
    """The random source failed while making a token."""


class KMSError(ECLCryptoError, _kb.KMSError):
    """The broker or the KMS behind it refused or failed a key operation."""


class KMSUnavailableError(KMSError, _kb.KMSUnavailableError):
    """The KMS (or the broker) cannot be reached now; retry with backoff."""


class KMSAuthenticationError(KMSError, _kb.KMSAuthenticationError):
    """Credentials or permissions were refused; retrying will not help."""


class KMSKeyNotFoundError(KMSError, _kb.KMSKeyNotFoundError):
    """The key does not exist, or the broker serves no key for it; not retryable."""


class EnvelopeError(ECLCryptoError):
    """An envelope is malformed, of an unknown version, or could not be sealed or opened."""


class DEKCacheError(ECLCryptoError):
    """The DEK cache was given an unusable setting or entry."""


class InvalidParameterError(ECLCryptoError, _kb.InvalidParameterError):
    """A parameter is invalid, for example a key that is not exactly 32 bytes."""


class UnsupportedBackendError(ECLCryptoError):
    """The KMS backend named is not one this package (or the broker) supports."""


class HashMismatchError(HashingError, VerificationError):
    """A password, digest or MAC did not match: catchable as either seed class."""


class EnvelopeEncryptionError(EnvelopeError, EncryptionError):
    """The broker could not seal an envelope."""


class EnvelopeDecryptionError(EnvelopeError, DecryptionError):
    """An envelope could not be opened: tampered, wrong key or wrong context."""


class BrokerUnavailableError(KMSUnavailableError, _kb.BrokerUnavailableError):
    """The keybroker daemon could not be reached: check it runs and KEYBROKER_SOCKET."""


class ResourceExhaustedError(KMSUnavailableError, _kb.ResourceExhaustedError):
    """A broker rate limit or budget is spent; retry later."""


class PermissionDeniedError(KMSAuthenticationError, _kb.PermissionDeniedError):
    """The broker's policy does not let this caller use the key this way."""


class AuthenticationError(PermissionDeniedError, _kb.AuthenticationError):
    """The broker could not establish who the caller is."""


class KeyStateError(KMSError, _kb.KeyStateError):
    """The broker key exists but cannot be used this way (disabled, or another purpose)."""


class UnsupportedOperationError(UnsupportedBackendError, _kb.UnsupportedOperationError):
    """The broker does not implement this call (an older daemon)."""
