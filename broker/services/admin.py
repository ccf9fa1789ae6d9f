"""Key administration: describe, list, rotate and enable/disable versions of logical keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.errors import PermissionDeniedError
from broker.services.keys import check_key_name

if TYPE_CHECKING:
    from broker.kms.base import BackendKey, KeyVersionInfo
    from broker.policy.authorizer import Authorizer, Caller
    from broker.services.deks import DekProvider
    from broker.services.keys import KeyRegistry, ResolvedKey

__all__ = ["KeyAdminService", "KeyDescription"]


@dataclass(frozen=True, slots=True)
class KeyDescription:
    """A logical key as callers see it: configuration plus the backend's metadata."""

    name: str
    uri: str
    backend: str
    purpose: str
    backend_key: BackendKey


class KeyAdminService:
    """Administrative operations; every one is authorized as `admin` on the key."""

    def __init__(self, keys: KeyRegistry, deks: DekProvider, authorizer: Authorizer) -> None:
        """Wire the narrow interfaces this use case needs."""
        self._keys = keys
        self._deks = deks
        self._authz = authorizer

    def _key(self, caller: Caller, name: str) -> ResolvedKey:
        check_key_name(name)
        self._authz.authorize(caller, key=name, operation="admin", context={})
        return self._keys.get(name, purpose=None)

    @staticmethod
    def _describe(key: ResolvedKey, backend_key: BackendKey) -> KeyDescription:
        return KeyDescription(key.name, key.uri, key.backend.scheme, key.purpose, backend_key)

    async def describe(self, caller: Caller, name: str) -> KeyDescription:
        """One key's metadata and versions."""
        key = self._key(caller, name)
        return self._describe(key, await key.backend.describe_key(key.key_id))

    async def list(self, caller: Caller) -> list[KeyDescription]:
        """The keys this caller may administer, by name."""
        out = []
        for name in self._keys.names():
            try:
                out.append(await self.describe(caller, name))
            except PermissionDeniedError:
                continue
        return out

    async def rotate(self, caller: Caller, name: str) -> KeyDescription:
        """New version for new envelopes; the encrypt-side DEKs of the key are retired at once."""
        key = self._key(caller, name)
        described = await key.backend.rotate_key(key.key_id)
        self._deks.invalidate(key.name)
        return self._describe(key, described)

    async def set_version_state(
        self, caller: Caller, name: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Enable or disable a version; cached DEKs are dropped so the change applies at once."""
        key = self._key(caller, name)
        info = await key.backend.set_version_state(key.key_id, version, enabled=enabled)
        self._deks.invalidate(key.name, decrypt_too=True, version=version)
        return info
