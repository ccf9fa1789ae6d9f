from __future__ import annotations

import hashlib

import pytest
from unit.services.fakes import CALLER, Decision

from broker.core import kdf
from broker.errors import InvalidRequestError, PermissionDeniedError
from broker.services.kdf import Derived, HkdfItem, KeyDerivationService

SALT = bytes(range(16))


@pytest.fixture
def derivation(ops, pool) -> KeyDerivationService:
    """The key-derivation service over the shared fakes."""
    return KeyDerivationService(ops, pool)


async def hkdf(derivation, **fields) -> Derived:
    """Derive from the `secret` key; must succeed."""
    return await derivation.hkdf(CALLER, HkdfItem("secret", **fields))


class TestHkdf:
    """KeyDerivationService.hkdf: keys derived from a secret that stays in the backend."""

    async def test_same_inputs_same_key(self, derivation):
        """Derivation is deterministic: the same inputs give the same 32-byte key."""
        first, second = await hkdf(derivation, info=b"db"), await hkdf(derivation, info=b"db")
        assert first == second
        assert (len(first.derived_key), first.key, first.key_version) == (32, "secret", 1)

    @pytest.mark.parametrize(
        "change", [{"info": b"cache"}, {"context": {"tenant": "b"}}, {"salt": b"s" * 16}]
    )
    async def test_any_input_changes_the_key(self, derivation, change):
        """Another info, context or salt derives an unrelated key."""
        base = {"info": b"db", "context": {"tenant": "a"}, "salt": b""}
        assert (await hkdf(derivation, **base)).derived_key != (
            await hkdf(derivation, **{**base, **change})
        ).derived_key

    async def test_info_and_context_are_bound_as_documented(self, derivation, fakes):
        """The output is HKDF-SHA256 over length-prefixed info then the canonical context."""
        context = {"tenant": "a", "purpose": "x"}
        derived = await hkdf(derivation, info=b"db", context=context, salt=SALT, length=48)
        secret = fakes.secrets._material("kek-secret", 1)
        info = kdf.derivation_info(b"db", context)
        assert derived.derived_key == kdf.hkdf_sha256(secret, salt=SALT, info=info, length=48)

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"length": 15}, "length must be 16..64 bytes"),
            ({"length": 65}, "length must be 16..64 bytes"),
            ({"salt": bytes(1025)}, "salt is longer than 1024 bytes"),
            ({"info": bytes(1025)}, "info is longer than 1024 bytes"),
        ],
    )
    async def test_bounds(self, derivation, fakes, fields, message):
        """Inputs out of bounds are InvalidRequest naming the bound, before the backend."""
        with pytest.raises(InvalidRequestError) as caught:
            await hkdf(derivation, **fields)
        assert caught.value.message == message
        assert fakes.secrets.calls["derive"] == 0

    async def test_rotation_changes_every_derived_key(self, derivation, fakes):
        """After rotation the same inputs derive a new key, named as version 2."""
        old = await hkdf(derivation, info=b"db")
        await fakes.secrets.rotate_key("kek-secret")
        new = await hkdf(derivation, info=b"db")
        assert new.key_version == 2
        assert new.derived_key != old.derived_key

    async def test_policy_sees_the_context(self, derivation, fakes):
        """The authorizer decides on the derivation context."""
        await hkdf(derivation, context={"tenant": "a"})
        assert fakes.authz.decisions == [
            Decision(CALLER, "secret", "derive", {"tenant": "a"}, allowed=True)
        ]


class TestPbkdf2:
    """KeyDerivationService.pbkdf2: password stretching in the bounded work pool."""

    async def test_matches_the_reference(self, derivation):
        """The output equals PBKDF2-HMAC-SHA256 of the standard library."""
        out = await derivation.pbkdf2(CALLER, b"hunter2", SALT, 10_000, 32)
        assert out.derived_key == hashlib.pbkdf2_hmac("sha256", b"hunter2", SALT, 10_000, 32)
        assert (out.salt, out.iterations) == (SALT, 10_000)

    async def test_random_salt_is_returned(self, derivation):
        """Without a salt a fresh 32-byte one is drawn and returned so the key can be rebuilt."""
        first = await derivation.pbkdf2(CALLER, b"pw", b"", 10_000, 16)
        second = await derivation.pbkdf2(CALLER, b"pw", b"", 10_000, 16)
        assert len(first.salt) == 32
        assert first.salt != second.salt
        again = await derivation.pbkdf2(CALLER, b"pw", first.salt, 10_000, 16)
        assert again.derived_key == first.derived_key

    @pytest.mark.parametrize(
        ("salt", "iterations", "message"),
        [
            (SALT, 9_999, "iterations must be 10,000..10,000,000"),
            (b"short", 10_000, "salt must be 16..1024 bytes (empty asks for a random one)"),
        ],
    )
    async def test_weak_parameters_are_refused(self, derivation, salt, iterations, message):
        """Too few iterations or a short salt are InvalidRequest naming the bound."""
        with pytest.raises(InvalidRequestError) as caught:
            await derivation.pbkdf2(CALLER, b"pw", salt, iterations, 32)
        assert caught.value.message == message

    async def test_authorized_as_keyless_derive(self, derivation, fakes):
        """PBKDF2 needs no key: the policy is asked about derive on key ""."""
        fakes.authz.deny(operation="derive", key="")
        with pytest.raises(PermissionDeniedError):
            await derivation.pbkdf2(CALLER, b"pw", SALT, 10_000, 32)
        assert fakes.authz.decisions == [Decision(CALLER, "", "derive", {}, allowed=False)]
