"""Password use cases: Argon2id hashes, optionally peppered with a broker HMAC key.

A peppered hash hashes HMAC-SHA256(pepper key, password) instead of the password. New hashes
use the pepper key's current version; verification tries the current version, then up to
three older enabled ones (newest first), and reports `needs_rehash` when an older one
matched, so hashes move to the new version as users log in. Every Argon2id run goes through
the work pool: over the memory budget, or over the caller's share of it, is
ResourceExhaustedError at once. A stored hash string whose costs exceed the configured maxima
is InvalidRequestError before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from broker.core import passwords
from broker.errors import InvalidRequestError, VerificationFailedError, WrongKeyPurposeError
from broker.kms.base import MacBackend

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.services.keys import ResolvedKey
    from broker.services.operations import Operations
    from broker.services.workpool import WorkPool

__all__ = ["DEFAULT_COSTS", "HashCosts", "PasswordChecked", "PasswordHashed", "PasswordService"]

_OPERATION = "hash_password"
_PEPPER_VERSIONS = 4  # the current version and up to three older enabled ones


@dataclass(frozen=True, slots=True)
class HashCosts:
    """`[hashing]` maxima of a stored hash string's costs; the defaults admit twice the seed's."""

    max_memory_kib: int = 128 * 1024
    max_time_cost: int = 6
    max_parallelism: int = 8


DEFAULT_COSTS: Final = HashCosts()


@dataclass(frozen=True, slots=True)
class PasswordHashed:
    """A PHC hash string, and the pepper key version used ("" and 0 without pepper)."""

    hash: str
    key: str
    key_version: int


@dataclass(frozen=True, slots=True)
class PasswordChecked:
    """A matching password; `needs_rehash` when the hash is weaker or an older pepper matched."""

    needs_rehash: bool
    key: str
    key_version: int


def _secret(password: str) -> bytes:
    data = password.encode("utf-8")
    try:
        passwords.check_password(data)
    except passwords.PasswordInputError as exc:
        raise InvalidRequestError(str(exc)) from None
    return data


def _parse(hash_string: str) -> passwords.PasswordHash:
    try:
        return passwords.parse_hash(hash_string)
    except passwords.PasswordHashFormatError as exc:
        raise InvalidRequestError(str(exc)) from None


def _check_costs(params: passwords.Argon2Params, costs: HashCosts) -> None:
    """Refuse a hash string costlier than configured, naming the setting, before any work."""
    for label, value, limit, setting in (
        ("m (memory, KiB)", params.memory_kib, costs.max_memory_kib, "max_memory_kib"),
        ("t (passes)", params.time_cost, costs.max_time_cost, "max_time_cost"),
        ("p (lanes)", params.parallelism, costs.max_parallelism, "max_parallelism"),
    ):
        if value > limit:
            raise InvalidRequestError(
                f"hash asks for {label} {value}; at most {limit} is accepted (hashing.{setting})"
            )


def _pepperer(key: ResolvedKey) -> MacBackend:
    if not isinstance(key.backend, MacBackend):
        raise WrongKeyPurposeError("this key's backend cannot compute a pepper")
    return key.backend


class PasswordService:
    """Hashes and verifies passwords for authorized callers, within the work pool's budget."""

    def __init__(self, ops: Operations, pool: WorkPool, costs: HashCosts = DEFAULT_COSTS) -> None:
        """Use the shared plumbing, the bounded pool that runs Argon2id and the cost maxima."""
        self._ops = ops
        self._pool = pool
        self._costs = costs

    def _pepper_key(self, caller: Caller, name: str) -> ResolvedKey | None:
        """Authorize (on the pepper key when one is named) and resolve it."""
        if not name:
            self._ops.authorize(caller, _OPERATION)
            return None
        return self._ops.key(caller, name, _OPERATION, ("hmac",))

    async def hash(self, caller: Caller, password: str, pepper_key: str = "") -> PasswordHashed:
        """An Argon2id PHC hash string with a fresh salt."""
        return await self._ops.audited(_OPERATION, self._hash(caller, password, pepper_key))

    async def _hash(self, caller: Caller, password: str, pepper_key: str) -> PasswordHashed:
        secret = _secret(password)
        key = self._pepper_key(caller, pepper_key)
        name, version = "", 0
        if key is not None:
            peppered = await _pepperer(key).mac(key.key_id, secret)
            secret, name, version = peppered.mac, key.name, peppered.key_version
        memory = passwords.DEFAULT_PARAMS.memory_bytes
        text = await self._pool.run(caller, memory, lambda: passwords.hash_password(secret))
        return PasswordHashed(text, name, version)

    async def verify(
        self, caller: Caller, password: str, hash_string: str, pepper_key: str = ""
    ) -> PasswordChecked:
        """Return only for a matching password; VerificationFailedError otherwise."""
        work = self._verify(caller, password, hash_string, pepper_key)
        return await self._ops.audited(_OPERATION, work)

    async def _verify(
        self, caller: Caller, password: str, hash_string: str, pepper_key: str
    ) -> PasswordChecked:
        secret = _secret(password)
        parsed = _parse(hash_string)
        _check_costs(parsed.params, self._costs)
        key = self._pepper_key(caller, pepper_key)
        candidates = [(secret, 0)] if key is None else await self._peppered(key, secret)
        memory = parsed.params.memory_bytes
        index = await self._pool.run(caller, memory, lambda: _first(candidates, parsed))
        if index is None:
            raise VerificationFailedError
        stale = index > 0 or passwords.needs_rehash(parsed)
        return PasswordChecked(stale, "" if key is None else key.name, candidates[index][1])

    async def _peppered(self, key: ResolvedKey, secret: bytes) -> list[tuple[bytes, int]]:
        """The peppered password under the current version, then older enabled ones."""
        backend = _pepperer(key)
        described = await key.backend.describe_key(key.key_id)
        current = described.current_version
        older = sorted(
            (
                v.version
                for v in described.versions
                if v.state == "enabled" and v.version != current
            ),
            reverse=True,
        )
        out = []
        for version in [current, *older][:_PEPPER_VERSIONS]:
            peppered = await backend.mac(key.key_id, secret, key_version=version)
            out.append((peppered.mac, peppered.key_version))
        return out


def _first(candidates: list[tuple[bytes, int]], parsed: passwords.PasswordHash) -> int | None:
    """Index of the first candidate that matches the hash (runs in a worker thread)."""
    for index, (secret, _) in enumerate(candidates):
        try:
            passwords.verify_password(secret, parsed)
        except passwords.PasswordMismatchError:
            continue
        return index
    return None
