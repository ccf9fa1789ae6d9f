"""Opening envelopes ``ecl_crypto_utility`` sealed under a KMS key the broker serves.

The seed wrapped each DEK with AWS KMS, Cloud KMS or Vault transit and no encryption
context (broker/core/seed_envelope.py). The broker's backend for the same KMS key unwraps
it with key version 0 and an empty context, which is the call the seed made: AWS KMS gets
no EncryptionContext, Cloud KMS no AAD and Vault no associated data, and each finds the key
version in its own ciphertext. So no backend needs a second unwrap path. The unwrapped DEK
is only used to open the payload, then overwritten (best effort, as for every DEK here).

The caller names the broker key (the envelope's own ``key_id`` never chooses it) and is
authorized for it before any key is looked up. Keys that cannot hold a seed's DEK are
refused with KeyStateError (FAILED_PRECONDITION): a seed ``LocalKMSBackend`` wrapped its
DEKs under the application's own master key, which the application uses to open them
(keybroker_client.compat does); the broker's other backends never served the seed; and a
multi-wrap key (``also_wrap``) unwraps only the broker's own list of wrapped DEKs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from broker.core.seed_envelope import SeedEnvelopeError, open_seed_payload, parse_seed_envelope
from broker.errors import (
    DecryptionFailedError,
    InvalidRequestError,
    KeyStateError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
)
from broker.services.keys import check_key_name

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.policy.authorizer import Authorizer, Caller
    from broker.services.keys import KeyRegistry, ResolvedKey

__all__ = ["SEED_OVERHEAD_BYTES", "SEED_SCHEMES", "SeedItem", "open_seed_envelope", "seed_keys"]

SEED_SCHEMES: Final = frozenset({"aws-kms", "gcp-kms", "vault-transit"})
# Room for every member but the data (wrapped DEK, key id, timestamp) after two base64 passes.
SEED_OVERHEAD_BYTES: Final = 64 << 10
_LOCAL: Final = (
    "seed envelopes of a local:// key were wrapped under the application's master key; the "
    "application opens them with it (keybroker_client.compat LocalKMSBackend(master_key=...))"
)
_OTHER: Final = "only AWS KMS, Cloud KMS and Vault transit keys open seed envelopes"
_MULTI: Final = (
    "a key with also_wrap cannot open seed envelopes; declare a key with the same uri "
    "and no also_wrap for the migration"
)


@dataclass(frozen=True, slots=True)
class SeedItem:
    """One stored seed envelope, the key whose KMS key wrapped its DEK, and where to reseal."""

    envelope: bytes
    key: str
    reseal_key: str = ""
    context: Mapping[str, str] = field(default_factory=dict)


def _check(item: SeedItem, max_plaintext_bytes: int) -> None:
    """Refuse what no seed envelope request can be, before anything is authorized."""
    limit = max_plaintext_bytes + SEED_OVERHEAD_BYTES
    if len(item.envelope) > limit:
        raise InvalidRequestError(
            f"envelope is larger than the limit of {limit} bytes "
            f"(server.max_plaintext_bytes + {SEED_OVERHEAD_BYTES})"
        )
    check_key_name(item.key)
    if item.reseal_key:
        check_key_name(item.reseal_key)
    elif item.context:
        raise InvalidRequestError("context applies to the resealed envelope: set reseal_key")


def _opening_key(keys: KeyRegistry, name: str) -> ResolvedKey:
    """The key whose backend is the very KMS key that can have wrapped a seed's DEK."""
    key = keys.get(name)
    scheme = key.uri.partition("://")[0]
    if scheme == "local":
        raise KeyStateError(_LOCAL)
    if scheme not in SEED_SCHEMES:
        raise KeyStateError(_OTHER)
    if key.backend.scheme != scheme:
        raise KeyStateError(_MULTI)
    return key


def seed_keys(
    caller: Caller,
    item: SeedItem,
    authorizer: Authorizer,
    keys: KeyRegistry,
    max_plaintext_bytes: int,
) -> tuple[ResolvedKey, ResolvedKey | None]:
    """Check the request, authorize both keys, then look them up: (opening key, reseal key)."""
    _check(item, max_plaintext_bytes)
    authorizer.authorize(caller, key=item.key, operation="decrypt", context={})
    if item.reseal_key:
        authorizer.authorize(caller, key=item.reseal_key, operation="encrypt", context=item.context)
    key = _opening_key(keys, item.key)
    return key, keys.get(item.reseal_key) if item.reseal_key else None


async def open_seed_envelope(key: ResolvedKey, envelope: bytes, max_plaintext_bytes: int) -> bytes:
    """The plaintext of a seed envelope; any failure to open it is DecryptionFailedError."""
    limit = max_plaintext_bytes + SEED_OVERHEAD_BYTES
    try:
        seed = parse_seed_envelope(envelope, max_bytes=limit)
    except SeedEnvelopeError:
        raise DecryptionFailedError from None
    try:
        dek = await key.backend.unwrap(key.key_id, 0, seed.wrapped_dek, {})
    except (KmsInvalidCiphertextError, KmsKeyNotFoundError):
        raise DecryptionFailedError from None
    try:
        return open_seed_payload(dek, seed.payload)
    except SeedEnvelopeError:
        raise DecryptionFailedError from None
    finally:
        dek[:] = bytes(len(dek))
