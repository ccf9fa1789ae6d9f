"""Backends that hand every operation to the broker: the seed's backend key → a broker key.

A seed backend named a key in its KMS (``key_id``: an AWS ARN or alias, a Cloud KMS crypto
key, a Vault transit key, a local label). The broker serves logical keys, each configured
with a backend key URI. ``BrokerKMSBackend.broker_key`` finds the broker key for a
``key_id``: the key whose URI is the one the seed backend would have used (``key_uri``),
else a broker key with that very name. It asks the broker once (``ListKeys``) per
``key_id`` and remembers the answer. No credentials are held here: wrapping, unwrapping
and generating DEKs are calls to the broker under that key.

Envelopes the seed sealed with a KMS key only the broker reaches are opened by the broker
(``open_seed_envelope``): it unwraps the DEK with that key and never returns it.

``BrokerKMSBackend`` itself (a keybroker addition) takes broker key names as ``key_id``.
"""

from __future__ import annotations

import base64
import threading
from typing import Final

from keybroker_client._convert import check_bytes
from keybroker_client.compat._calls import broker_call, client
from keybroker_client.compat._util import b64decode_text, invalid
from keybroker_client.compat.exceptions import (
    DecryptionError,
    EnvelopeDecryptionError,
    EnvelopeError,
    KMSError,
    KMSKeyNotFoundError,
    PermissionDeniedError,
)

from .base import KMSBackend

__all__ = ["BrokerKMSBackend"]

_NOT_BASE64: Final = "encrypted_key is not base64 text"


class BrokerKMSBackend(KMSBackend):
    """A KMS backend whose keys are the broker's logical keys, named as ``key_id``."""

    def __init__(self) -> None:
        """Start with no key resolved; nothing contacts the broker before the first operation."""
        self._lock = threading.Lock()
        self._resolved: dict[str, str] = {}

    @property
    def backend_type(self) -> str:
        """The class name, as the seed's audit entries name a backend."""
        return type(self).__name__

    def key_uri(self, key_id: str) -> str | None:
        """The broker key URI this backend's ``key_id`` denotes; None: key_id is a broker name."""
        del key_id
        return None

    def broker_key(self, key_id: str) -> str:
        """The broker's logical key for ``key_id``; KMSKeyNotFoundError when it serves none."""
        if not isinstance(key_id, str) or not key_id:
            raise invalid("key_id must be a non-empty str")
        with self._lock:
            known = self._resolved.get(key_id)
        if known is not None:
            return known
        name = self._resolve(key_id)
        with self._lock:
            self._resolved[key_id] = name
        return name

    def _resolve(self, key_id: str) -> str:
        """Ask the broker which of its keys has the URI, else the name, ``key_id`` stands for."""
        uri = self.key_uri(key_id)
        if uri is None:
            return key_id
        try:
            with broker_call(KMSError):
                keys = client().list_keys()
        except PermissionDeniedError:
            return key_id  # not allowed to list: the name is the best guess, the call decides
        by_uri = sorted(k.name for k in keys if k.uri == uri)
        if by_uri:
            return key_id if key_id in by_uri else by_uri[0]
        if any(k.name == key_id for k in keys):
            return key_id
        raise KMSKeyNotFoundError(
            f"the broker serves no key for {uri} ({self.backend_type} key_id {key_id!r}); "
            f'declare [keys.NAME] with uri = "{uri}" in its configuration, or start it '
            "with ECL_CRYPTO_KMS_BACKEND and ECL_CRYPTO_KMS_KEY_ID naming this key",
            reason="KEY_NOT_FOUND",
        )

    def encrypt_key(self, key_material: bytes, key_id: str) -> str:
        """Seal a DEK in the broker under the mapped key; returns the broker envelope as base64."""
        data = check_bytes("key_material", key_material)
        key = self.broker_key(key_id)
        with broker_call(KMSError):
            sealed = client().encrypt(data, key=key)
        return base64.b64encode(sealed).decode("ascii")

    def decrypt_key(self, encrypted_key: str, key_id: str) -> bytes:
        """Open a DEK sealed by ``encrypt_key`` or ``generate_data_key`` (it names its key)."""
        del key_id  # the broker envelope records its own key and version
        raw = b64decode_text("encrypted_key", encrypted_key)
        if raw is None:
            raise DecryptionError(_NOT_BASE64, reason="DECRYPTION_FAILED")
        with broker_call(KMSError):
            return client().decrypt(raw)

    def generate_data_key(self, key_id: str) -> tuple[bytes, str]:
        """A fresh 256-bit DEK from the broker and its broker envelope as base64."""
        key = self.broker_key(key_id)
        with broker_call(KMSError):
            plaintext, sealed = client().generate_data_key(key=key)
        return plaintext, base64.b64encode(sealed).decode("ascii")

    @property
    def opens_seed_deks_here(self) -> bool:
        """Whether this process holds the key the seed wrapped DEKs with; no: only the broker."""
        return False

    def open_seed_envelope(
        self, envelope: bytes, key_id: str, *, reseal_key: str | None = None
    ) -> bytes:
        """Have the broker open a seed envelope (decoded JSON) with the key ``key_id`` maps to.

        Returns the plaintext; with ``reseal_key``, the broker envelope that now holds it.
        """
        key = self.broker_key(key_id)
        text = base64.b64encode(envelope)
        with broker_call(EnvelopeError, undecryptable=EnvelopeDecryptionError):
            return client().open_seed_envelope(text, key=key, reseal_key=reseal_key)

    def open_seed_dek(self, encrypted_dek: str, key_id: str) -> bytes:
        """Unwrap a seed-wrapped DEK here; only a backend holding the wrapping key can.

        The broker unwraps the DEKs of its KMS keys itself and never returns them, so this
        base class refuses: such envelopes open with ``open_seed_envelope``.
        """
        del encrypted_dek
        raise EnvelopeError(
            f"the DEK of {self.backend_type} key {key_id!r} is unwrapped in the broker and never "
            "returned; open the envelope with EnvelopeEncryptor.decrypt or migrate"
        )

    def __repr__(self) -> str:
        """The class name; no settings of a backend are secret, but none are needed here."""
        return f"{self.backend_type}()"
