"""The embedded key store: one JSON file in the state directory, replaced atomically per change.

Format 1 (`keyring.json`, mode 0600), readable by every earlier release:

    {"format": 1, "check": HEX, "revision": N,
     "keys": {NAME: {"type": T, "current": V,
                     "versions": {"V": {"enabled": B, "state": S, "created": ISO,
                                         "material": BASE64}}}}}

A change is written to a temp file beside the keyring, fsynced, renamed over it, and the
directory is fsynced: after a crash the file holds the old keys or the new ones, never a mix.
The generation it replaces stays beside it as `keyring.json.prev` (a hard link, so keeping it
costs no write), for recovery when the current file is damaged. A failed write leaves both
the file and this object unchanged and says why, ending in "no change was made".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import errno
import hmac
import json
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from broker.errors import ConfigError, KeyStoreReadOnlyError, KeyStoreUnavailableError
from broker.keystore.base import VERSION_STATES, Snapshot, StoredKey, StoredVersion

if TYPE_CHECKING:
    from broker.keystore.base import Sealer, VersionState

__all__ = ["FileKeyStore", "fsync_dir", "require_private", "write_private"]

log = structlog.get_logger("keybroker")

_FORMAT: Final = 1
_MAX_FILE_BYTES: Final = 16 << 20
PREVIOUS_SUFFIX: Final = ".prev"
# errno -> what the caller is told; each means an operator must act (FAILED_PRECONDITION)
_REFUSED: Final = {
    errno.EROFS: "the key store's file system is read-only",
    errno.ENOSPC: "the key store's disk is full",
    errno.EDQUOT: "the key store's disk quota is exhausted",
    errno.EACCES: "the key store's files are not writable by the daemon",
    errno.EPERM: "the key store's files are not writable by the daemon",
    errno.EBUSY: "the keyring file is a mount point and cannot be replaced",
    errno.EXDEV: "the keyring file is a mount point and cannot be replaced",
}


def require_private(path: Path) -> None:
    """Refuse a secret file other users can read, naming the chmod that fixes it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path}: mode {mode:o} lets other users read it; run chmod 600 {path}")


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_private(path: Path, data: bytes, *, keep_previous: bool = False) -> None:
    """Replace a 0600 file atomically (temp, fsync, rename, fsync dir), keeping the old aside."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    staging = path.with_name(f".{path.name}.prev-link")
    kept = False
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            os.link(path, staging)  # the generation being replaced, still under its old name
            kept = True
        Path(tmp).replace(path)
    except BaseException:
        for leftover in (Path(tmp), staging) if kept else (Path(tmp),):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    if kept:
        staging.replace(path.with_name(path.name + PREVIOUS_SUFFIX))
    fsync_dir(path.parent)


def _remove_leftovers(path: Path) -> None:
    """Delete temp files a crash left behind (never the keyring or its previous generation)."""
    for leftover in path.parent.glob(f".{path.name}.*"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            log.info("keystore_temp_removed", file=str(leftover))


def _write_error(exc: OSError, path: Path) -> Exception:
    """The caller-facing error for a failed write; the path and errno go to the log only."""
    log.error("keystore_write_failed", file=str(path), errno=exc.errno, error=exc.strerror)
    cause = _REFUSED.get(exc.errno or 0)
    if cause is not None:
        return KeyStoreReadOnlyError(f"{cause}; no change was made")
    return KeyStoreUnavailableError("the key store could not be written; no change was made")


def _version_from_json(number: str, raw: dict[str, Any]) -> StoredVersion:
    state = raw.get("state") or ("enabled" if raw["enabled"] else "disabled")
    if state not in VERSION_STATES:
        raise ValueError(state)
    return StoredVersion(
        version=int(number),
        state=state,
        created=datetime.fromisoformat(raw["created"]),
        sealed=base64.b64decode(raw["material"], validate=True),
    )


def _key_from_json(name: str, raw: dict[str, Any]) -> StoredKey:
    versions = {int(n): _version_from_json(n, v) for n, v in raw["versions"].items()}
    return StoredKey(name, str(raw["type"]), int(raw["current"]), versions)


def _key_to_json(key: StoredKey, revision: int) -> dict[str, Any]:
    return {
        "revision": revision,
        "type": key.key_type,
        "current": key.current,
        "versions": {
            str(v.version): {
                "enabled": v.state == "enabled",
                "state": v.state,
                "created": v.created.isoformat(),
                "material": base64.b64encode(v.sealed).decode("ascii"),
            }
            for v in key.versions.values()
        },
    }


class FileKeyStore:
    """KeyStore over one keyring file; one daemon owns it (the socket lock guarantees that)."""

    kind = "file"

    def __init__(self, path: Path, data: dict[str, Any], keys: dict[str, StoredKey]) -> None:
        """Use `FileKeyStore.open`; this constructor trusts already-validated data."""
        self._path = path
        self._data = data
        self._keys = keys
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> FileKeyStore:
        """Open the keyring (an empty store when absent); refuse a damaged one, naming recovery."""
        _remove_leftovers(path)
        if not path.exists():
            return cls(path, {"format": _FORMAT, "revision": 0, "keys": {}}, {})
        require_private(path)
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {_MAX_FILE_BYTES} bytes; not a keyring")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise ConfigError(f"{path}: unsupported keyring format")
            keys = {name: _key_from_json(name, raw) for name, raw in data["keys"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise ConfigError(_damaged(path)) from None
        return cls(path, data, keys)

    def where(self) -> str:
        """The keyring file's path."""
        return str(self._path)

    def bind_root(self, check: str) -> None:
        """Record the check value in a new keyring; refuse a root key it was not made with."""
        with self._lock:
            stored = self._data.get("check")
            if stored is None:
                self._commit({**self._data, "check": check})
                return
        if not hmac.compare_digest(str(stored), check):
            raise ConfigError(
                f"{self._path}: the configured master key (ECL_CRYPTO_LOCAL_MASTER_KEY, master.key "
                "or master.key.wrapped) is not the one this keyring was created with"
            )

    def load(self) -> Snapshot:
        """Every key in the file."""
        return Snapshot(int(self._data.get("revision", 0)), dict(self._keys))

    def changes(self, since: int) -> Snapshot | None:
        """Keys committed after revision `since` (the owning daemon has seen them all already)."""
        changed = {
            name: key
            for name, key in self._keys.items()
            if int(self._data["keys"][name].get("revision", 0)) > since
        }
        return Snapshot(int(self._data.get("revision", 0)), changed) if changed else None

    def create_key(self, name: str, key_type: str, seal: Sealer) -> StoredKey:
        """Commit a new key with version 1, or return the existing key of that name."""
        with self._lock:
            existing = self._keys.get(name)
            if existing is not None:
                return existing
            first = StoredVersion(1, "enabled", datetime.now(UTC), seal(1))
            key = StoredKey(name, key_type, 1, {1: first})
            return self._commit_key(key)

    def add_version(self, name: str, *, expected_current: int, seal: Sealer) -> StoredKey:
        """Commit a new current version numbered above every version the key ever had."""
        with self._lock:
            key = self._keys[name]
            if key.current != expected_current:
                return key
            number = key.next_version()
            version = StoredVersion(number, "enabled", datetime.now(UTC), seal(number))
            return self._commit_key(key.with_version(version, current=True))

    def set_state(self, name: str, version: int, state: VersionState) -> StoredKey:
        """Commit one version's new state."""
        with self._lock:
            key = self._keys[name]
            old = key.versions[version]
            if old.state == state:
                return key
            changed = StoredVersion(old.version, state, old.created, old.sealed)
            return self._commit_key(key.with_version(changed, current=False))

    def put_key(self, key: StoredKey) -> StoredKey:
        """Commit a whole key, versions and states as given, unless the name exists."""
        with self._lock:
            existing = self._keys.get(key.name)
            return existing if existing is not None else self._commit_key(key)

    def close(self) -> None:
        """Nothing is held open between changes."""

    def _commit_key(self, key: StoredKey) -> StoredKey:
        """Write the file with `key` in it; only after the rename does this object change."""
        data = copy.copy(self._data)
        revision = int(data.get("revision", 0)) + 1
        data["keys"] = {**self._data["keys"], key.name: _key_to_json(key, revision)}
        self._commit(data)
        self._keys[key.name] = key
        return key

    def _commit(self, data: dict[str, Any]) -> None:
        data["revision"] = int(data.get("revision", 0)) + 1
        encoded = json.dumps(data, indent=1, sort_keys=True).encode()
        try:
            write_private(self._path, encoded, keep_previous=True)
        except OSError as exc:
            raise _write_error(exc, self._path) from exc
        self._data = data


def _damaged(path: Path) -> str:
    """One line naming the damaged file and the generation kept for recovery."""
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    if previous.exists():
        return (
            f"{path}: not a valid keyring file; the previous generation is kept in {previous}: "
            f"check it, then move it to {path} to recover"
        )
    return f"{path}: not a valid keyring file; restore it from backup"
