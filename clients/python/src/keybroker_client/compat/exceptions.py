"""The seed's exception names: the very classes ``keybroker_client`` raises, not copies.

``except keybroker_client.compat.exceptions.DecryptionError`` and ``except
keybroker_client.DecryptionError`` catch the same failures, local or from the broker.
"""

from keybroker_client._errors import (
    AuthenticationError,
    BrokerUnavailableError,
    DecryptionError,
    EncryptionError,
    HashingError,
    InvalidParameterError,
    KeybrokerError,
    KeyDerivationError,
    KeyStateError,
    KMSAuthenticationError,
    KMSError,
    KMSKeyNotFoundError,
    KMSUnavailableError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SigningError,
    TokenGenerationError,
    UnsupportedOperationError,
    VerificationError,
)

__all__ = [
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
]
