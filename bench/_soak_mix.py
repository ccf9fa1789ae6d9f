"""The soak's operation mix, and the daemon configuration that serves it (bench/soak.py).

Two callers (`app-a`, `app-b`: tenants a and b, one unix listener each) use two envelope keys
only with their own tenant in the context, and share two signing keys, an HMAC key and tokens.
Every operation checks what it gets back against what was made earlier.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keybroker_client import AsyncClient, KeybrokerError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["CONFIG", "TENANTS", "Tally", "Workload"]

BATCH = 10
POOL = 500  # envelopes, signatures and MACs kept per pool, to check later
TENANTS = ("a", "b")
TABLES = ("orders", "invoices", "users")
ENVELOPE_KEYS = ("orders", "pii")
SIGNING_KEYS = ("sig-p256", "sig-ed")
SIZES = (16, 256, 1024, 4096)
TOKEN_BYTES = 32

CONFIG = """
[server]
state_dir = "{state}"
{allow_root}

[[listeners]]
kind = "unix"
path = "{run}/app-a.sock"
identity = "app-a"

[[listeners]]
kind = "unix"
path = "{run}/app-b.sock"
identity = "app-b"

[keys.orders]
uri = "local://orders"

[keys.pii]
uri = "local://pii"

[keys.sig-p256]
uri = "local://sig-p256"
purpose = "signing"
algorithm = "ecdsa-p256-sha256"

[keys.sig-ed]
uri = "local://sig-ed"
purpose = "signing"
algorithm = "ed25519"

[keys.mac]
uri = "local://mac"
purpose = "hmac"

[policy.identities.app-a]
listener = "app-a"
attributes = {{ tenant = "a" }}

[policy.identities.app-b]
listener = "app-b"
attributes = {{ tenant = "b" }}

[[policy.rules]]
id = "own-tenant-data"
callers = ["app-*"]
keys = ["orders", "pii"]
operations = ["encrypt", "decrypt", "rewrap"]
context = {{ tenant = "${{caller.tenant}}" }}

[[policy.rules]]
id = "shared-keys"
callers = ["app-*"]
keys = ["sig-*", "mac"]
operations = ["sign", "verify", "hmac"]

[[policy.rules]]
id = "tokens"
callers = ["app-*"]
keys = ["*"]
operations = ["token"]

[[policy.rules]]
id = "a-rotates"
callers = ["app-a"]
keys = ["orders"]
operations = ["admin"]
"""


class WrongResultError(Exception):
    """The daemon answered, but not what the operation must give back."""


@dataclass(frozen=True, slots=True)
class Kept:
    """Something made earlier, to be checked by a later operation."""

    key: str
    data: bytes
    made: bytes


@dataclass
class Tally:
    """What the run did and what failed, by status and reason."""

    done: int = 0
    items: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    first: dict[str, str] = field(default_factory=dict)

    def fail(self, label: str, message: str) -> None:
        """Count one error; keep the first message of each kind."""
        self.errors[label] += 1
        self.first.setdefault(label, message)


class Workload:
    """The mix of operations, and the envelopes, signatures and MACs they check."""

    def __init__(self, clients: dict[str, AsyncClient], tally: Tally, seed: int) -> None:
        """One client per caller (tenant)."""
        self._clients, self._tally = clients, tally
        self._rng = random.Random(seed)  # noqa: S311 - a workload, not secrets
        self._sealed: dict[tuple[str, str], collections.deque[Kept]] = collections.defaultdict(
            lambda: collections.deque(maxlen=POOL)
        )
        self._signed: collections.deque[Kept] = collections.deque(maxlen=POOL)
        self._macs: collections.deque[Kept] = collections.deque(maxlen=POOL)
        mix: list[tuple[int, Callable[[str], Awaitable[int]]]] = [
            (20, self._encrypt),
            (20, self._decrypt),
            (6, self._encrypt_batch),
            (6, self._decrypt_batch),
            (5, self._rewrap),
            (8, self._sign),
            (8, self._verify),
            (8, self._hmac),
            (8, self._hmac_verify),
            (6, self._token),
        ]
        self._ops = [op for _, op in mix]
        self._weights = [w for w, _ in mix]

    async def one(self) -> None:
        """One operation, by a random caller; its failure is counted, never raised."""
        tenant = self._rng.choice(TENANTS)
        op = self._rng.choices(self._ops, self._weights)[0]
        await self._run(op(tenant))

    async def rotate(self) -> None:
        """Rotate `orders` (caller app-a), as an operator would during the run."""

        async def rotated() -> int:
            await self._clients["a"].rotate_key("orders")
            return 1

        await self._run(rotated())

    async def _run(self, op: Awaitable[int]) -> None:
        try:
            items = await op  # awaited first: `+=` would read the count before the await
            self._tally.items += items
        except KeybrokerError as exc:
            code = exc.code.name if exc.code is not None else type(exc).__name__
            label = f"{code} ({exc.reason})" if exc.reason not in ("", code) else code
            self._tally.fail(label, exc.message)
        except WrongResultError as exc:
            self._tally.fail("WRONG_RESULT", str(exc))
        self._tally.done += 1

    def _payload(self) -> bytes:
        return self._rng.randbytes(self._rng.choice(SIZES))

    def _pool(self, tenant: str) -> tuple[dict[str, str], collections.deque[Kept]]:
        """A context of this tenant, and the envelopes sealed under it."""
        table = self._rng.choice(TABLES)
        return {"tenant": tenant, "table": table}, self._sealed[tenant, table]

    async def _encrypt(self, tenant: str) -> int:
        context, pool = self._pool(tenant)
        key, plaintext = self._rng.choice(ENVELOPE_KEYS), self._payload()
        envelope = await self._clients[tenant].encrypt(plaintext, key=key, context=context)
        pool.append(Kept(key, plaintext, envelope))
        return 1

    async def _decrypt(self, tenant: str) -> int:
        context, pool = self._pool(tenant)
        if not pool:
            return await self._encrypt(tenant)
        kept = self._rng.choice(pool)
        if await self._clients[tenant].decrypt(kept.made, context=context) != kept.data:
            raise WrongResultError("decrypt returned another plaintext")
        return 1

    async def _encrypt_batch(self, tenant: str) -> int:
        context, pool = self._pool(tenant)
        key, plaintexts = self._rng.choice(ENVELOPE_KEYS), [self._payload() for _ in range(BATCH)]
        results = await self._clients[tenant].encrypt_batch(plaintexts, key=key, context=context)
        for plaintext, result in zip(plaintexts, self._items(results), strict=True):
            pool.append(Kept(key, plaintext, result))
        return BATCH

    async def _decrypt_batch(self, tenant: str) -> int:
        context, pool = self._pool(tenant)
        if len(pool) < BATCH:
            return await self._encrypt_batch(tenant)
        chosen = self._rng.sample(list(pool), BATCH)
        envelopes = [k.made for k in chosen]
        results = await self._clients[tenant].decrypt_batch(envelopes, context=context)
        if self._items(results) != [k.data for k in chosen]:
            raise WrongResultError("decrypt_batch returned other plaintexts")
        return BATCH

    def _items(self, results: Sequence[bytes | KeybrokerError]) -> list[bytes]:
        """A batch's results, each of which must have succeeded."""
        for result in results:
            if isinstance(result, KeybrokerError):
                raise result
        return [r for r in results if isinstance(r, bytes)]

    async def _rewrap(self, tenant: str) -> int:
        context, pool = self._pool(tenant)
        if not pool:
            return await self._encrypt(tenant)
        kept = self._rng.choice(pool)
        envelope = await self._clients[tenant].rewrap(kept.made, context=context)
        pool.append(Kept(kept.key, kept.data, envelope))
        return 1

    async def _sign(self, tenant: str) -> int:
        key, data = self._rng.choice(SIGNING_KEYS), self._payload()
        self._signed.append(Kept(key, data, await self._clients[tenant].sign(data, key=key)))
        return 1

    async def _verify(self, tenant: str) -> int:
        if not self._signed:
            return await self._sign(tenant)
        kept = self._rng.choice(self._signed)
        await self._clients[tenant].verify(kept.data, kept.made, key=kept.key)
        return 1

    async def _hmac(self, tenant: str) -> int:
        data = self._payload()
        self._macs.append(Kept("mac", data, await self._clients[tenant].hmac(data, key="mac")))
        return 1

    async def _hmac_verify(self, tenant: str) -> int:
        if not self._macs:
            return await self._hmac(tenant)
        kept = self._rng.choice(self._macs)
        await self._clients[tenant].hmac_verify(kept.data, kept.made, key=kept.key)
        return 1

    async def _token(self, tenant: str) -> int:
        if len(await self._clients[tenant].token(TOKEN_BYTES, encoding="bytes")) != TOKEN_BYTES:
            raise WrongResultError("a token of another length than asked")
        return 1
