"""The seed's ``LocalKMSBackend``: development keys, served by the broker's local backend.

``key_id`` maps to the broker key with URI ``local://KEY_ID`` (or named KEY_ID). A
``master_key`` given here is used for one thing only: opening envelopes the seed sealed with
``LocalKMSBackend(master_key=...)``, whose DEK it wrapped in the symmetric format with no
associated data, ``base64(nonce ‖ AES-256-GCM(master_key, DEK) ‖ tag)``. New DEKs are
wrapped by the broker. Every operation logs a WARNING, as the seed did: local keys are for
development.
"""

from __future__ import annotations

import logging
from typing import Final

from keybroker_client._convert import check_bytes
from keybroker_client.compat import symmetric
from keybroker_client.compat._util import b64decode_text, invalid
from keybroker_client.compat.exceptions import (
    DecryptionError,
    EnvelopeDecryptionError,
    EnvelopeError,
)

from .broker import BrokerKMSBackend

__all__ = ["LocalKMSBackend"]

_log = logging.getLogger(__name__)
_WRAPPED_DEK_SIZE: Final = symmetric.NONCE_SIZE + symmetric.KEY_SIZE + symmetric.TAG_SIZE
_DEV_ONLY: Final = "LocalKMSBackend is for development only (broker key %r)"


def _needs_master_key(key_id: str) -> EnvelopeError:
    """Say which key opens a seed LocalKMSBackend envelope: only the application has it."""
    return EnvelopeError(
        f"the envelope's DEK was wrapped by ecl_crypto_utility's LocalKMSBackend (key_id "
        f"{key_id!r}) under its master key; give that key as LocalKMSBackend(master_key=...) "
        "or ECL_CRYPTO_LOCAL_MASTER_KEY"
    )


class LocalKMSBackend(BrokerKMSBackend):
    """Local development keys: the broker's ``local://`` keys, plus the seed's master key."""

    def __init__(self, master_key: bytes | None = None) -> None:
        """Take an optional 32-byte master key, only to open envelopes the seed sealed with it."""
        super().__init__()
        if master_key is not None:
            master_key = check_bytes("master_key", master_key)
            if len(master_key) != symmetric.KEY_SIZE:
                raise invalid(
                    f"master_key must be {symmetric.KEY_SIZE} bytes, got {len(master_key)}"
                )
        self._master_key = master_key

    def key_uri(self, key_id: str) -> str:
        """``local://KEY_ID``: the URI of the broker's local key of that name."""
        return f"local://{key_id}"

    def broker_key(self, key_id: str) -> str:
        """The broker key for ``key_id``, with the seed's development-only warning."""
        key = super().broker_key(key_id)
        _log.warning(_DEV_ONLY, key)
        return key

    def decrypt_key(self, encrypted_key: str, key_id: str) -> bytes:
        """Open a DEK wrapped by the broker, or by the seed under this object's master key."""
        _log.warning(_DEV_ONLY, key_id)
        raw = b64decode_text("encrypted_key", encrypted_key)
        if self._master_key is not None and raw is not None and len(raw) == _WRAPPED_DEK_SIZE:
            try:
                return symmetric.decrypt(encrypted_key, self._master_key)
            except DecryptionError:
                pass  # not the seed's wrap under this key: the broker may have made it
        return super().decrypt_key(encrypted_key, key_id)

    @property
    def opens_seed_deks_here(self) -> bool:
        """True when given the seed's master key: its envelopes then open in this process."""
        return self._master_key is not None

    def open_seed_envelope(
        self, envelope: bytes, key_id: str, *, reseal_key: str | None = None
    ) -> bytes:
        """Refuse: the seed wrapped this envelope's DEK under a master key the broker lacks."""
        del envelope, reseal_key
        raise _needs_master_key(key_id)

    def open_seed_dek(self, encrypted_dek: str, key_id: str) -> bytes:
        """Unwrap a DEK the seed wrapped under the master key given to this object."""
        if self._master_key is None:
            raise _needs_master_key(key_id)
        _log.warning(_DEV_ONLY, key_id)
        try:
            return symmetric.decrypt(encrypted_dek, self._master_key)
        except DecryptionError as exc:
            raise EnvelopeDecryptionError(
                "the envelope's DEK does not open with this LocalKMSBackend's master key",
                exc,
                reason="DECRYPTION_FAILED",
            ) from exc

    def __repr__(self) -> str:
        """Say whether a master key was given, never the key."""
        return f"LocalKMSBackend(master_key={'<32 bytes>' if self._master_key else None})"
