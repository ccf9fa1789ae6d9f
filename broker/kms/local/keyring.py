"""The local keyring file: versioned key material sealed under a 256-bit root master key.

The file (`keyring.json`, mode 0600) holds, per logical key, its type and versions; each
version's material is AES-256-GCM sealed under the root key with the key name, version and
type as associated data, so entries cannot be swapped. A check value tells at start whether
the configured root key is the one the keyring was made with. Writes are atomic.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import ConfigError

__all__ = ["Keyring", "VersionMeta", "load_root_key", "require_private", "write_private"]

_FORMAT = 1
_CHECK_INFO = b"keybroker/keyring/check/v1"
_MAX_FILE_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class VersionMeta:
    """Metadata of one key version (no material)."""

    version: int
    enabled: bool
    created: datetime


def load_root_key(state_dir: Path, master_key_hex: str | None) -> bytes:
    """Return the root key from configuration, or from `master.key`, creating it on first start."""
    if master_key_hex is not None:
        return bytes.fromhex(master_key_hex)
    path = state_dir / "master.key"
    if path.exists():
        require_private(path)
        text = path.read_text(encoding="ascii").strip()
        if len(text) != 64:  # noqa: PLR2004 - 32 bytes in hex
            raise ConfigError(f"{path}: not a 64-hex-character master key; restore it from backup")
        return bytes.fromhex(text)
    key = os.urandom(32)
    write_private(path, key.hex().encode("ascii") + b"\n")
    return key


def require_private(path: Path) -> None:
    """Refuse a secret file other users can read, naming the chmod that fixes it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path}: mode {mode:o} lets other users read it; run chmod 600 {path}")


def write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically: temp file in the same directory, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _aad(name: str, version: int, key_type: str) -> bytes:
    n, t = name.encode(), key_type.encode()
    return (
        b"keybroker/keyring/v1"
        + struct.pack(">B", len(n))
        + n
        + struct.pack(">IB", version, len(t))
        + t
    )


class Keyring:
    """Versioned key material for the local backend, persisted in one file."""

    def __init__(self, path: Path, root_key: bytes, data: dict[str, Any]) -> None:
        """Use `Keyring.open`; this constructor trusts already-validated data."""
        self._path = path
        self._root = AESGCM(root_key)
        self._check = hmac.new(root_key, _CHECK_INFO, hashlib.sha256).hexdigest()
        self._data = data

    @classmethod
    def open(cls, path: Path, root_key: bytes) -> Keyring:
        """Load the keyring, or start an empty one; refuse a root key it was not made with."""
        if not path.exists():
            ring = cls(path, root_key, {"format": _FORMAT, "keys": {}})
            ring._data["check"] = ring._check
            ring.save()
            return ring
        require_private(path)
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {_MAX_FILE_BYTES} bytes; not a keyring")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{path}: not a valid keyring file; restore it from backup") from None
        ring = cls(path, root_key, data)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ConfigError(f"{path}: unsupported keyring format")
        if not hmac.compare_digest(str(data.get("check", "")), ring._check):
            raise ConfigError(
                f"{path}: the configured master key (ECL_CRYPTO_LOCAL_MASTER_KEY, master.key "
                "or master.key.wrapped) is not the one this keyring was created with"
            )
        return ring

    def save(self) -> None:
        """Persist atomically with mode 0600."""
        write_private(self._path, json.dumps(self._data, indent=1, sort_keys=True).encode())

    def names(self) -> list[str]:
        """Key names in the keyring."""
        return sorted(self._data["keys"])

    def key_type(self, name: str) -> str | None:
        """The key's type, or None when the keyring has no such key."""
        entry = self._data["keys"].get(name)
        return None if entry is None else str(entry["type"])

    def create(self, name: str, key_type: str, material: bytes) -> None:
        """Add a new key with version 1."""
        self._data["keys"][name] = {"type": key_type, "current": 0, "versions": {}}
        self.add_version(name, material)

    def add_version(self, name: str, material: bytes) -> int:
        """Seal new material as the key's next (and current) version; returns the version."""
        entry = self._data["keys"][name]
        version = int(entry["current"]) + 1
        nonce = os.urandom(12)
        sealed = nonce + self._root.encrypt(nonce, material, _aad(name, version, entry["type"]))
        entry["versions"][str(version)] = {
            "enabled": True,
            "created": datetime.now(UTC).isoformat(),
            "material": base64.b64encode(sealed).decode("ascii"),
        }
        entry["current"] = version
        self.save()
        return version

    def current_version(self, name: str) -> int:
        """The version new operations use."""
        return int(self._data["keys"][name]["current"])

    def versions(self, name: str) -> list[VersionMeta]:
        """All versions, oldest first."""
        items = self._data["keys"][name]["versions"].items()
        return [
            VersionMeta(int(v), bool(m["enabled"]), datetime.fromisoformat(m["created"]))
            for v, m in sorted(items, key=lambda kv: int(kv[0]))
        ]

    def material(self, name: str, version: int) -> bytearray | None:
        """Decrypted material of one version, or None when that version does not exist."""
        entry = self._data["keys"].get(name)
        meta = None if entry is None else entry["versions"].get(str(version))
        if meta is None:
            return None
        sealed = base64.b64decode(meta["material"])
        aad = _aad(name, version, entry["type"])
        return bytearray(self._root.decrypt(sealed[:12], sealed[12:], aad))

    def is_enabled(self, name: str, version: int) -> bool:
        """Whether a version exists and is enabled."""
        meta = self._data["keys"][name]["versions"].get(str(version))
        return bool(meta and meta["enabled"])

    def set_enabled(self, name: str, version: int, *, enabled: bool) -> VersionMeta | None:
        """Enable or disable one version; None when it does not exist."""
        meta = self._data["keys"][name]["versions"].get(str(version))
        if meta is None:
            return None
        meta["enabled"] = enabled
        self.save()
        return VersionMeta(version, enabled, datetime.fromisoformat(meta["created"]))
