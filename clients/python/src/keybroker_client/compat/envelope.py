"""The seed's ``EnvelopeEncryptor``: envelopes sealed by the broker, old ones migrated.

With a backend this package ships (``LocalKMSBackend``, ``AWSKMSBackend``,
``GCPKMSBackend``, ``VaultKMSBackend``, ``BrokerKMSBackend``) ``encrypt`` asks the broker to
seal under the broker key that ``key_id`` maps to and returns the broker's envelope as
base64 text; the master key and the DEK stay in the broker. ``decrypt`` opens those, and
also envelopes the seed sealed (its JSON format, see ``seed_envelope``): those of an AWS KMS,
Cloud KMS or Vault transit key are opened by the broker, which unwraps the DEK with that
key and never returns it; those of a seed ``LocalKMSBackend`` are opened here with the
master key given to ``LocalKMSBackend(master_key=...)``. ``migrate`` re-seals a seed
envelope in the broker (for a broker-opened one in the same call, so the plaintext stays
there).

With a ``KMSBackend`` subclass of the caller's own, the seed's flow runs in this process
(fresh DEK, AES-256-GCM, DEK wrapped by that backend, seed JSON envelope), and ``dek_cache``
caches unwrapped DEKs as the seed did. Every ``encrypt`` and ``decrypt`` writes an entry
to the ``ecl_crypto_utility.audit`` logger.
"""

from __future__ import annotations

import base64
import contextlib
from typing import TYPE_CHECKING, Any, Final

from . import symmetric
from ._calls import broker_call, client
from ._util import invalid, text_or_bytes
from .audit import log_kms_operation
from .cache import DEKCache
from .exceptions import (
    DecryptionError,
    ECLCryptoError,
    EnvelopeDecryptionError,
    EnvelopeEncryptionError,
    EnvelopeError,
    KMSError,
)
from .kms.base import KMSBackend
from .kms.broker import BrokerKMSBackend
from .seed_envelope import (
    SeedEnvelope,
    build_seed_envelope,
    decode_envelope,
    envelope_kind,
    parse_seed_envelope,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["EnvelopeEncryptor"]

_SEED_FORMAT: Final = "ecl_crypto_utility"
_NOT_AN_ENVELOPE: Final = (
    "envelope_data is neither a broker envelope nor one sealed by ecl_crypto_utility"
)
_KEY_NAME_AT: Final = 3  # broker header: format, algorithm, flags, then the name's length


def _text(raw: bytes) -> str:
    """Envelopes travel as standard base64 text, as the seed's did."""
    return base64.b64encode(raw).decode("ascii")


def _broker_key_name(raw: bytes) -> str | None:
    """The logical key a broker envelope names in its header, for the audit entry."""
    if len(raw) <= _KEY_NAME_AT:
        return None
    end = _KEY_NAME_AT + 1 + raw[_KEY_NAME_AT]
    name = raw[_KEY_NAME_AT + 1 : end]
    return name.decode("ascii", errors="replace") if len(name) == raw[_KEY_NAME_AT] else None


class EnvelopeEncryptor:
    """Seals data under a KMS key with a fresh DEK per envelope; the seed's class."""

    def __init__(
        self, kms_backend: KMSBackend, key_id: str, dek_cache: DEKCache | None = None
    ) -> None:
        """Bind a backend and its key id; nothing is contacted until the first operation."""
        if not isinstance(kms_backend, KMSBackend):
            raise invalid("kms_backend must be a KMSBackend")
        if not isinstance(key_id, str) or not key_id:
            raise invalid("key_id must be a non-empty str")
        if dek_cache is not None and not isinstance(dek_cache, DEKCache):
            raise invalid("dek_cache must be a DEKCache or None")
        self.kms_backend = kms_backend
        self.key_id = key_id
        self.dek_cache = dek_cache

    def encrypt(self, plaintext: bytes | str) -> str:
        """Seal plaintext; returns the envelope as base64 text."""
        data = text_or_bytes("plaintext", plaintext)
        backend = self.kms_backend
        if isinstance(backend, BrokerKMSBackend):
            with self._audited("encrypt_dek", self.key_id) as metadata:
                key = backend.broker_key(self.key_id)
                metadata["broker_key"] = key
                return self._seal_in_broker(data, key)
        return self._seal_here(data)

    def decrypt(self, envelope_data: str | bytes) -> bytes:
        """Open an envelope: the broker's, or one the seed sealed if its DEK can be unwrapped."""
        raw = decode_envelope(envelope_data)
        kind = envelope_kind(raw)
        if kind == "seed":
            return self._open_seed(raw)
        if kind == "broker":
            with self._audited("decrypt_dek", self.key_id) as metadata:
                metadata["broker_key"] = _broker_key_name(raw)
                with broker_call(EnvelopeError, undecryptable=EnvelopeDecryptionError):
                    return client().decrypt(raw)
        raise EnvelopeError(_NOT_AN_ENVELOPE)

    def migrate(self, envelope_data: str | bytes, *, key: str | None = None) -> str:
        """Re-seal a seed envelope in the broker (its format, base64); broker ones come back as is.

        ``key`` names the broker key for the new envelope; by default the one ``key_id`` maps
        to (``default`` for a backend of the caller's own).
        """
        raw = decode_envelope(envelope_data)
        kind = envelope_kind(raw)
        if kind == "broker":
            return _text(raw)
        opener = self._broker_opener()
        if kind == "seed" and opener is not None:
            return self._reseal_seed(opener, raw, key)
        plaintext = self.decrypt(envelope_data)
        if key is None:
            key = self._target_key()
        with self._audited("encrypt_dek", self.key_id, broker_key=key, migrated=True):
            return self._seal_in_broker(plaintext, key)

    def _target_key(self) -> str:
        """Where migrated data goes: the broker key ``key_id`` maps to, else ``default``."""
        backend = self.kms_backend
        if isinstance(backend, BrokerKMSBackend):
            return backend.broker_key(self.key_id)
        return "default"

    @contextlib.contextmanager
    def _audited(self, operation: str, key_id: str, **metadata: Any) -> Iterator[dict[str, Any]]:  # noqa: ANN401 - JSON values
        """Log one audit entry for the block: success, or failure with ``metadata.error``."""
        backend = type(self.kms_backend).__name__
        try:
            yield metadata
        except Exception as exc:
            failure = {**metadata, "error": f"{type(exc).__name__}: {exc}"}
            log_kms_operation(operation, key_id, backend, success=False, metadata=failure)
            raise
        log_kms_operation(operation, key_id, backend, success=True, metadata=metadata or None)

    @staticmethod
    def _seal_in_broker(data: bytes, key: str) -> str:
        """Seal in the broker under a logical key."""
        with broker_call(EnvelopeEncryptionError, undecryptable=EnvelopeDecryptionError):
            return _text(client().encrypt(data, key=key))

    def _seal_here(self, data: bytes) -> str:
        """The seed's flow with a caller's own backend: DEK here, wrapped by that backend."""
        dek = symmetric.generate_key()
        with self._audited("encrypt_dek", self.key_id):
            wrapped = self._call_backend(
                "encrypt_key", lambda: self.kms_backend.encrypt_key(dek, self.key_id)
            )
            if not isinstance(wrapped, str) or not wrapped:
                msg = f"{type(self.kms_backend).__name__}.encrypt_key must return base64 text"
                raise KMSError(msg)
        return build_seed_envelope(wrapped, self.key_id, symmetric.encrypt(data, dek))

    def _broker_opener(self) -> BrokerKMSBackend | None:
        """The backend, when seed envelopes open in the broker (only it reaches their KMS key)."""
        backend = self.kms_backend
        if isinstance(backend, BrokerKMSBackend) and not backend.opens_seed_deks_here:
            return backend
        return None

    def _open_seed(self, raw: bytes) -> bytes:
        """Open a seed envelope: in the broker, or here when this process holds the KMS key."""
        envelope = parse_seed_envelope(raw)
        opener = self._broker_opener()
        if opener is None:
            return self._open_seed_here(envelope)
        with self._audited("decrypt_dek", envelope.key_id, format=_SEED_FORMAT):
            return opener.open_seed_envelope(raw, envelope.key_id)

    def _reseal_seed(self, opener: BrokerKMSBackend, raw: bytes, key: str | None) -> str:
        """Open a seed envelope and seal its plaintext under ``key`` in one broker call."""
        envelope = parse_seed_envelope(raw)
        target = self._target_key() if key is None else key
        with (
            self._audited("encrypt_dek", self.key_id, broker_key=target, migrated=True),
            self._audited("decrypt_dek", envelope.key_id, format=_SEED_FORMAT),
        ):
            return _text(opener.open_seed_envelope(raw, envelope.key_id, reseal_key=target))

    def _open_seed_here(self, envelope: SeedEnvelope) -> bytes:
        """Open a seed envelope in this process: cached or unwrapped DEK, then AES-256-GCM."""
        cache = self.dek_cache
        dek = cache.get(envelope.encrypted_dek) if cache is not None else None
        with self._audited(
            "decrypt_dek", envelope.key_id, format=_SEED_FORMAT, cache_hit=dek is not None
        ):
            if dek is None:
                dek = self._unwrap_seed_dek(envelope)
                if cache is not None:
                    cache.put(envelope.encrypted_dek, dek)
            try:
                return symmetric.decrypt(envelope.encrypted_data, dek)
            except DecryptionError as exc:
                msg = "envelope could not be decrypted"
                raise EnvelopeDecryptionError(msg, exc, reason="DECRYPTION_FAILED") from exc

    def _unwrap_seed_dek(self, envelope: SeedEnvelope) -> bytes:
        """Unwrap the DEK of a seed envelope with the backend that wrapped it."""
        backend = self.kms_backend
        if isinstance(backend, BrokerKMSBackend):
            return backend.open_seed_dek(envelope.encrypted_dek, envelope.key_id)
        dek = self._call_backend(
            "decrypt_key", lambda: backend.decrypt_key(envelope.encrypted_dek, envelope.key_id)
        )
        if not isinstance(dek, (bytes, bytearray)):
            raise KMSError(f"{type(backend).__name__}.decrypt_key must return bytes")
        return bytes(dek)

    def _call_backend(self, method: str, call: Callable[[], object]) -> object:
        """Call a caller's own backend; what it raises that is not ours becomes a KMSError."""
        try:
            return call()
        except ECLCryptoError:
            raise
        except Exception as exc:
            msg = f"{type(self.kms_backend).__name__}.{method} failed: {type(exc).__name__}"
            raise KMSError(msg, exc) from exc

    def __repr__(self) -> str:
        """Backend and key id; the cache's settings only."""
        return (
            f"EnvelopeEncryptor(kms_backend={self.kms_backend!r}, key_id={self.key_id!r}, "
            f"dek_cache={self.dek_cache!r})"
        )
