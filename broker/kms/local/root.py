"""The keyring's root key wrapped by a KMS key (`[keyring] master_key_uri`), never stored in clear.

On first start the backend's `generate_data_key` makes a fresh 256-bit root key and only its
wrapped form is kept, in STATE/master.key.wrapped (mode 0600, written atomically):

    {"format": 1, "uri": "aws-kms://…", "key_version": 0, "wrapped": "BASE64"}

Every start unwraps it with the KMS key; a file recorded for another URI is refused, so a
changed setting cannot silently start an empty keyring. The wrap binds the encryption
context {"keybroker": "keyring-root"} (AWS EncryptionContext, transit associated data), so
the file unwraps only as a root key. A plain master.key left from before is wrapped, checked
by unwrapping it, and only then removed: the migration is one-way.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from broker.errors import BrokerError, ConfigError
from broker.keystore.file import require_private, write_private
from broker.kms.local.keyring import load_root_key

if TYPE_CHECKING:
    from pathlib import Path

    from broker.kms.base import KmsBackend

__all__ = ["PLAIN_FILE", "ROOT_CONTEXT", "WRAPPED_FILE", "wrapped_root_key"]

WRAPPED_FILE: Final = "master.key.wrapped"
PLAIN_FILE: Final = "master.key"
ROOT_CONTEXT: Final = MappingProxyType({"keybroker": "keyring-root"})
_KEYRING_FILE = "keyring.json"  # the name app.py gives the keyring in the state dir
_FORMAT = 1
_ROOT_BYTES = 32
_MAX_FILE_BYTES = 64 << 10


async def wrapped_root_key(state_dir: Path, uri: str, backend: KmsBackend) -> bytes:
    """The root key, unwrapped (or created, or migrated) by the KMS key behind `uri`."""
    key_id = uri.partition("://")[2]
    path = state_dir / WRAPPED_FILE
    try:
        if path.exists():
            return await _unwrap(path, uri, key_id, backend)
        if (state_dir / PLAIN_FILE).exists():
            return await _migrate(state_dir, uri, key_id, backend)
        if (state_dir / _KEYRING_FILE).exists():
            msg = (
                f"keyring.master_key_uri: {state_dir / _KEYRING_FILE} exists but neither "
                f"{PLAIN_FILE} nor {WRAPPED_FILE} does; restore the root key file from backup"
            )
            raise ConfigError(msg)
        return await _create(path, uri, key_id, backend)
    except BrokerError as exc:
        msg = f"keyring.master_key_uri: {uri} did not unwrap the keyring root key: {exc.message}"
        raise ConfigError(msg) from exc


async def _create(path: Path, uri: str, key_id: str, backend: KmsBackend) -> bytes:
    """First start: a KMS-made root key, of which only the wrapped form reaches the disk."""
    generated = await backend.generate_data_key(key_id, ROOT_CONTEXT)
    try:
        if len(generated.plaintext) != _ROOT_BYTES:
            raise ConfigError(f"keyring.master_key_uri: {uri} made a key of the wrong size")
        _write(path, uri, generated.key_version, generated.wrapped)
        return bytes(generated.plaintext)
    finally:
        generated.wipe()


async def _migrate(state_dir: Path, uri: str, key_id: str, backend: KmsBackend) -> bytes:
    """Wrap an existing plain root key, prove the wrapped form opens, then delete the plain one."""
    root = load_root_key(state_dir, None)
    wrapped = await backend.wrap(key_id, root, ROOT_CONTEXT)
    path = state_dir / WRAPPED_FILE
    _write(path, uri, wrapped.key_version, wrapped.wrapped)
    try:
        unwrapped = await _unwrap(path, uri, key_id, backend)
    except BaseException:
        path.unlink()  # master.key stays the only root key until a migration succeeds
        raise
    if not hmac.compare_digest(unwrapped, root):
        path.unlink()
        raise ConfigError(f"keyring.master_key_uri: {uri} returned another key than it wrapped")
    (state_dir / PLAIN_FILE).unlink()
    return root


async def _unwrap(path: Path, uri: str, key_id: str, backend: KmsBackend) -> bytes:
    """Open the stored root key with the KMS key the file names (which must be `uri`)."""
    recorded, version, wrapped = _read(path)
    if recorded != uri:
        msg = (
            f"keyring.master_key_uri: {path} was wrapped by {recorded}, not {uri}; "
            "set master_key_uri back to it"
        )
        raise ConfigError(msg)
    root = await backend.unwrap(key_id, version, wrapped, ROOT_CONTEXT)
    try:
        if len(root) != _ROOT_BYTES:
            raise ConfigError(f"{path}: the KMS returned a key of the wrong size")
        return bytes(root)
    finally:
        root[:] = bytes(len(root))


def _write(path: Path, uri: str, key_version: int, wrapped: bytes) -> None:
    """Store the wrapped root key and the URI that wrapped it (0600, atomic)."""
    record = {
        "format": _FORMAT,
        "uri": uri,
        "key_version": key_version,
        "wrapped": base64.b64encode(wrapped).decode("ascii"),
    }
    write_private(path, json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")


def _read(path: Path) -> tuple[str, int, bytes]:
    """(uri, key version, wrapped bytes) from the file; ConfigError naming it when malformed."""
    require_private(path)
    broken = ConfigError(f"{path}: not a wrapped keyring root key; restore it from backup")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise broken
    try:
        record: Any = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != _FORMAT:
            raise broken
        uri, version = record["uri"], record["key_version"]
        wrapped = base64.b64decode(record["wrapped"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise broken from None
    if not isinstance(uri, str) or not isinstance(version, int) or isinstance(version, bool):
        raise broken
    return uri, version, wrapped
