"""Python client for keybroker, the local key-broker daemon.

``Client`` (blocking) and ``AsyncClient`` (asyncio) talk gRPC to the daemon's Unix socket,
found through ``socket=``, ``KEYBROKER_SOCKET``, ``./.keybroker/keybroker.sock`` or
``/run/keybroker/keybroker.sock``: envelope encryption, signatures, RSA-OAEP, password
hashing, digests, HMACs and blind indexes, key derivation and tokens, all with keys the
broker holds. ``encrypt``/``decrypt`` are the seed-style shortcuts that return and accept
the base64 text form; ``keybroker_client.compat`` is the whole seed-compatible API. Every
failure is a ``KeybrokerError``.
"""

from ._aio import AsyncClient
from ._client import Client
from ._errors import (
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
from ._facade import decrypt, encrypt
from ._keys import KeyInfo, KeyVersionInfo
from ._lease import DataKeyLease

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BrokerUnavailableError",
    "Client",
    "DataKeyLease",
    "DecryptionError",
    "EncryptionError",
    "HashingError",
    "InvalidParameterError",
    "KMSAuthenticationError",
    "KMSError",
    "KMSKeyNotFoundError",
    "KMSUnavailableError",
    "KeyDerivationError",
    "KeyInfo",
    "KeyStateError",
    "KeyVersionInfo",
    "KeybrokerError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SigningError",
    "TokenGenerationError",
    "UnsupportedOperationError",
    "VerificationError",
    "decrypt",
    "encrypt",
]
