from __future__ import annotations

import asyncio
import re
import threading

import pytest
from unit.services.fakes import CALLER, Decision

from broker.core import passwords
from broker.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    ResourceExhaustedError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.policy.authorizer import Caller
from broker.services.passwords import HashCosts, PasswordChecked, PasswordService
from broker.services.workpool import WorkLimits, WorkPool

# Weaker than the defaults, so hashes made with it are fast to check (and flagged for rehash).
CHEAP = passwords.Argon2Params(time_cost=1, memory_kib=64, parallelism=1)


@pytest.fixture
def service(ops, pool) -> PasswordService:
    """The password service over the shared fakes."""
    return PasswordService(ops, pool)


async def peppered_hash(fakes, password: str, version: int) -> str:
    """A cheap hash of the password peppered with one version of the `hmac` key."""
    pepper = await fakes.macs.mac("kek-hmac", password.encode(), key_version=version)
    return passwords.hash_password(pepper.mac, CHEAP)


class TestPasswordService:
    """PasswordService: Argon2id hashes, optionally peppered, checked in the work pool."""

    async def test_hash_then_verify(self, service):
        """A fresh hash uses the default parameters and verifies without needing a rehash."""
        hashed = await service.hash(CALLER, "correct horse")
        assert hashed.hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        checked = await service.verify(CALLER, "correct horse", hashed.hash)
        assert checked == PasswordChecked(needs_rehash=False, key="", key_version=0)

    async def test_wrong_password(self, service):
        """Another password is VerificationFailed, never a false result."""
        stored = passwords.hash_password(b"correct horse", CHEAP)
        with pytest.raises(VerificationFailedError):
            await service.verify(CALLER, "battery staple", stored)

    async def test_weak_hash_asks_for_a_rehash(self, service):
        """A hash made with weaker parameters verifies and says it should be replaced."""
        stored = passwords.hash_password(b"pw", CHEAP)
        assert (await service.verify(CALLER, "pw", stored)).needs_rehash

    async def test_malformed_hash_string(self, service):
        """A stored string that is not Argon2id PHC is InvalidRequest saying what is expected."""
        with pytest.raises(InvalidRequestError) as caught:
            await service.verify(CALLER, "pw", "$2b$12$bcrypt")
        assert caught.value.message == "hash is not an Argon2id PHC string ($argon2id$v=19$...)"

    async def test_peppered_hash_verifies_only_with_the_pepper(self, service, fakes):
        """A peppered hash checks with its pepper key and fails without it."""
        stored = await peppered_hash(fakes, "pw", 1)
        checked = await service.verify(CALLER, "pw", stored, pepper_key="hmac")
        assert (checked.key, checked.key_version) == ("hmac", 1)
        with pytest.raises(VerificationFailedError):
            await service.verify(CALLER, "pw", stored)

    async def test_older_pepper_version_still_verifies(self, service, fakes):
        """After the pepper key rotates, hashes peppered with version 1 verify as version 1."""
        stored = await peppered_hash(fakes, "pw", 1)
        await fakes.macs.rotate_key("kek-hmac")
        checked = await service.verify(CALLER, "pw", stored, pepper_key="hmac")
        assert (checked.needs_rehash, checked.key_version) == (True, 1)

    async def test_pepper_key_of_another_purpose(self, service):
        """An envelope key cannot pepper passwords."""
        with pytest.raises(WrongKeyPurposeError):
            await service.verify(CALLER, "pw", passwords.hash_password(b"pw", CHEAP), "default")

    async def test_authorized_as_hash_password(self, service, fakes):
        """Without a pepper the policy is asked about hash_password on key "", and may deny."""
        fakes.authz.deny(operation="hash_password")
        with pytest.raises(PermissionDeniedError):
            await service.verify(CALLER, "pw", passwords.hash_password(b"pw", CHEAP))
        assert fakes.authz.decisions == [Decision(CALLER, "", "hash_password", {}, allowed=False)]

    async def test_hash_over_the_memory_budget(self, ops):
        """A budget smaller than one default hash refuses it, naming the setting."""
        pool = WorkPool(WorkLimits(memory_budget_bytes=32 << 20))
        try:
            with pytest.raises(InvalidRequestError, match=r"hashing\.memory_budget_bytes"):
                await PasswordService(ops, pool).hash(CALLER, "pw")
        finally:
            pool.close()


class TestCostsAndShares:
    """Stored hash strings are bounded by [hashing] maxima; callers by their pool share."""

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ("m=131073,t=6,p=8", "m (memory, KiB) 131073; at most 131072 is accepted"),
            ("m=65536,t=7,p=4", "t (passes) 7; at most 6 is accepted (hashing.max_time_cost)"),
            ("m=65536,t=3,p=9", "p (lanes) 9; at most 8 is accepted (hashing.max_parallelism)"),
        ],
        ids=["memory", "time", "lanes"],
    )
    async def test_over_cost_hash_is_refused_before_any_work(
        self, service, pool, fakes, params, message
    ):
        """A hash string over a default maximum is InvalidRequest naming it; nothing runs."""
        stored = f"$argon2id$v=19${params}$c2FsdHNhbHRzYWx0c2FsdA${'A' * 43}"
        with pytest.raises(InvalidRequestError, match=re.escape(message)):
            await service.verify(CALLER, "pw", stored)
        assert fakes.authz.decisions == []
        assert pool.in_use() == (0, 0)

    async def test_configured_maxima(self, ops, pool):
        """Lower maxima refuse what the defaults admit, naming the setting; the rest verifies."""
        costs = HashCosts(max_memory_kib=1024, max_time_cost=1, max_parallelism=1)
        service = PasswordService(ops, pool, costs)
        for params, setting in (((1, 2048, 1), "max_memory_kib"), ((2, 64, 1), "max_time_cost")):
            stored = passwords.hash_password(b"pw", passwords.Argon2Params(*params))
            with pytest.raises(InvalidRequestError, match=rf"hashing\.{setting}"):
                await service.verify(CALLER, "pw", stored)
        assert await service.verify(CALLER, "pw", passwords.hash_password(b"pw", CHEAP))

    async def test_the_pool_share_is_per_caller(self, ops):
        """A caller holding its share is refused; another caller is served meanwhile."""
        pool = WorkPool(WorkLimits(max_share_per_caller=0.25))
        gate = threading.Event()
        try:
            held = asyncio.create_task(pool.run(CALLER, 64 << 20, lambda: gate.wait(10)))
            await asyncio.sleep(0)
            service = PasswordService(ops, pool)
            with pytest.raises(ResourceExhaustedError, match=r"hashing\.max_share_per_caller"):
                await service.hash(CALLER, "pw")
            other = Caller(kind="unix", name="other-app")
            assert (await service.hash(other, "pw")).hash.startswith("$argon2id$")
            gate.set()
            await held
        finally:
            gate.set()
            pool.close()
