"""The ``ecl_crypto_utility`` API on keybroker: migrate by changing one import.

    from keybroker_client.compat import encrypt, decrypt, EnvelopeEncryptor, LocalKMSBackend
    from keybroker_client.compat.exceptions import DecryptionError
    from keybroker_client.compat.kms.aws import AWSKMSBackend

Names, signatures, defaults, return types, module paths and the exception hierarchy are the
seed's. Operations on keys the caller holds (AES-256-GCM with ``key=``, RSA and ECDSA on
PEM key pairs, HMAC, SHA-256, HKDF, PBKDF2, tokens) run locally on pyca/cryptography in the
seed's formats. Operations on KMS keys (``encrypt``/``decrypt`` without ``key=``,
``EnvelopeEncryptor``, the KMS backends) and password hashing go to the broker through one
shared ``Client`` (``KEYBROKER_SOCKET``), which holds the master keys and credentials.
docs/compat.md is the migration guide.
"""

from . import (
    asymmetric,
    audit,
    cache,
    envelope,
    exceptions,
    hashing,
    kdf,
    kms,
    seed_envelope,
    symmetric,
    tokens,
)
from ._autoconfig import decrypt, encrypt, migrate_envelope
from .asymmetric import (
    generate_ecdsa_key_pair,
    generate_rsa_key_pair,
    rsa_decrypt,
    rsa_encrypt,
    sign,
    verify,
)
from .audit import log_kms_operation
from .cache import DEKCache
from .envelope import EnvelopeEncryptor
from .exceptions import *  # noqa: F403 - the seed's exception names, listed in exceptions.__all__
from .hashing import (
    hash_data,
    hash_password,
    hmac_sign,
    hmac_verify,
    verify_data_integrity,
    verify_password,
)
from .kdf import derive_key_hkdf, derive_key_pbkdf2
from .kms import (
    AWSKMSBackend,
    BrokerKMSBackend,
    GCPKMSBackend,
    KMSBackend,
    LocalKMSBackend,
    VaultKMSBackend,
)
from .symmetric import envelope_decrypt, envelope_encrypt, generate_key
from .tokens import generate_token_bytes, generate_token_hex, generate_token_urlsafe

__all__ = [  # noqa: PLE0604 - exceptions.__all__ is a list of str
    *exceptions.__all__,
    "AWSKMSBackend",
    "BrokerKMSBackend",
    "DEKCache",
    "EnvelopeEncryptor",
    "GCPKMSBackend",
    "KMSBackend",
    "LocalKMSBackend",
    "VaultKMSBackend",
    "asymmetric",
    "audit",
    "cache",
    "decrypt",
    "derive_key_hkdf",
    "derive_key_pbkdf2",
    "encrypt",
    "envelope",
    "envelope_decrypt",
    "envelope_encrypt",
    "exceptions",
    "generate_ecdsa_key_pair",
    "generate_key",
    "generate_rsa_key_pair",
    "generate_token_bytes",
    "generate_token_hex",
    "generate_token_urlsafe",
    "hash_data",
    "hash_password",
    "hashing",
    "hmac_sign",
    "hmac_verify",
    "kdf",
    "kms",
    "log_kms_operation",
    "migrate_envelope",
    "rsa_decrypt",
    "rsa_encrypt",
    "seed_envelope",
    "sign",
    "symmetric",
    "tokens",
    "verify",
    "verify_data_integrity",
    "verify_password",
]
