from __future__ import annotations

import pytest
from unit.services.fakes import CALLER, Decision

from broker.core import passwords
from broker.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    VerificationFailedError,
    WrongKeyPurposeError,
)
from broker.services.passwords import PasswordChecked, PasswordService
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
