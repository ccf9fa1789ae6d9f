"""The seed API (``ecl_crypto_utility``) on keybroker: migrate by changing one import.

    from keybroker_client.compat import symmetric, asymmetric, hashing, kdf, tokens
    import keybroker_client.compat as ecl_crypto_utility

Module, function and exception names are the seed's. Operations on a key the caller holds
(AES-256-GCM, HMAC, HKDF, PBKDF2, SHA-256, tokens) run locally on pyca/cryptography with
the seed's formats; operations on keys the broker holds (envelopes, RSA, signatures,
password hashing, ``*_with_key_id``) go through one shared ``Client``, found through
``KEYBROKER_SOCKET``. The exceptions are ``keybroker_client``'s own classes. See
docs/compat.md for which functions run where.
"""

from keybroker_client._facade import decrypt, encrypt

from . import asymmetric, exceptions, hashing, kdf, symmetric, tokens
from .exceptions import *  # noqa: F403 - the seed exception names, listed in exceptions.__all__
from .symmetric import envelope_decrypt, envelope_encrypt

__all__ = [  # noqa: PLE0604 - exceptions.__all__ is a list of str
    *exceptions.__all__,
    "asymmetric",
    "decrypt",
    "encrypt",
    "envelope_decrypt",
    "envelope_encrypt",
    "exceptions",
    "hashing",
    "kdf",
    "symmetric",
    "tokens",
]
