"""HMAC-SHA256 with Vault/OpenBao transit keys (`purpose = "hmac"`): transit `hmac` and `verify`.

Any transit key computes HMACs (an `hmac` type key is the natural choice); the key never
leaves Vault. Transit answers `vault:vN:BASE64`: the broker returns the raw 32-byte MAC and
carries N as the key version. Blind indexes need a key per (field, tenant) label, which
transit cannot derive, so the broker derives it with transit's HMAC as the PRF:

    index_key = transit-HMAC-SHA256(key, label)      # current version
    index     = HMAC-SHA256(index_key, value)[:length]

The same shape as a local key's HKDF derivation (a PRF keyed by the secret, over the label);
the index values differ from a local key's, as they would for any two keys.
"""

from __future__ import annotations

from typing import Any

from broker.core import macs
from broker.errors import InvalidRequestError
from broker.kms.base import MacResult
from broker.kms.vault.signing import (
    TransitPart,
    b64,
    check_verified,
    enabled_versions,
    parse_prefixed,
    usable_version,
)

__all__ = ["VaultHmac"]


class VaultHmac(TransitPart):
    """The MacBackend half of the transit backend; runs every request through the backend."""

    async def mac(self, key_id: str, data: bytes, *, key_version: int = 0) -> MacResult:
        """`hmac/NAME/sha2-256` under one version (0 = latest; others checked first)."""
        mount, name = self._split(key_id)

        def operation() -> str:
            body: dict[str, Any] = {"input": b64(data)}
            if key_version:
                body["key_version"] = usable_version(self._read_key(key_id), key_version)
            return str(self._post(f"{mount}/hmac/{name}/sha2-256", body)["data"]["hmac"])

        version, mac = parse_prefixed(await self._run(operation))
        return MacResult(mac, version)

    async def verify_mac(self, key_id: str, key_version: int, data: bytes, mac: bytes) -> int:
        """`verify/NAME/sha2-256` for one version, or for every enabled version in one batch."""
        mount, name = self._split(key_id)
        given, proof = b64(data), b64(mac)

        def operation() -> tuple[list[int], list[dict[str, Any]]]:
            versions = [key_version] if key_version else enabled_versions(self._read_key(key_id))
            batch = [{"input": given, "hmac": f"vault:v{v}:{proof}"} for v in versions]
            body = {"batch_input": batch}
            results = self._post(f"{mount}/verify/{name}/sha2-256", body)["data"]["batch_results"]
            return versions, list(results)

        versions, results = await self._run(operation)
        return check_verified(versions, results)

    async def derived_mac(self, key_id: str, label: bytes, data: bytes, length: int) -> MacResult:
        """HMAC under a per-label key that transit's HMAC derives from the latest version."""
        low, high = macs.BLIND_INDEX_LENGTHS
        if not low <= length <= high:
            raise InvalidRequestError(f"length must be {low}..{high} bytes")
        derived = await self.mac(key_id, label)
        return MacResult(macs.hmac_sha256(derived.mac, data)[:length], derived.key_version)
