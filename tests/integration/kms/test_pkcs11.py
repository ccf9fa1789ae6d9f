"""The PKCS#11 backend against a real SoftHSM2 token in a temporary token directory."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pkcs11
import pytest
from integration.kms.contract import CONTEXT, KmsBackendContract
from integration.kms.softhsm import PIN, TOKEN_LABEL, SoftHsm

from broker.errors import (
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsKeyNotFoundError,
)
from broker.kms.pkcs11 import Pkcs11Backend, Pkcs11Settings, version_label
from broker.kms.pkcs11.sessions import module_lock as _module_lock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def backend(softhsm: SoftHsm) -> AsyncIterator[Pkcs11Backend]:
    """A backend logged in to the test token, closed (and logged out) after the test."""
    hsm = Pkcs11Backend(softhsm.settings())
    yield hsm
    await hsm.close()


async def _new_key(backend: Pkcs11Backend) -> str:
    key_id = f"{TOKEN_LABEL}/kek-{uuid.uuid4().hex[:12]}"
    assert await backend.ensure_key(key_id)
    return key_id


@pytest.fixture
async def key_id(backend: Pkcs11Backend) -> str:
    """A fresh AES-256 key generated inside the token."""
    return await _new_key(backend)


@pytest.fixture
async def other_key_id(backend: Pkcs11Backend) -> str:
    """Another fresh key."""
    return await _new_key(backend)


@pytest.fixture
def missing_key_id() -> str:
    """A label no object on the token carries."""
    return f"{TOKEN_LABEL}/missing-{uuid.uuid4().hex[:12]}"


class TestPkcs11BackendContract(KmsBackendContract):
    """SoftHSM2 binds the context through the GCM AAD and enforces disabled versions."""


def _objects(softhsm: SoftHsm, label: str) -> list[tuple[str, bool, bool]]:
    """(label, sensitive, extractable) of the objects carrying `label`, read in this process."""
    with _module_lock(softhsm.lib):
        token = softhsm.lib.get_token(token_label=TOKEN_LABEL)  # type: ignore[attr-defined]
        session = token.open()
        try:
            a = pkcs11.Attribute
            found = session.get_objects({a.LABEL: label})
            return [(key.label, key[a.SENSITIVE], key[a.EXTRACTABLE]) for key in found]
        finally:
            session.close()


class TestPkcs11Backend:
    """What is specific to PKCS#11: labels as versions, PIN handling, sessions, format."""

    async def test_rotation_adds_labelled_version_objects(
        self, backend: Pkcs11Backend, key_id: str, softhsm: SoftHsm
    ) -> None:
        """Version N of LABEL is the object LABEL#vN, generated non-extractable in the HSM."""
        label = key_id.split("/", 1)[1]
        await backend.rotate_key(key_id)
        described = await backend.rotate_key(key_id)
        assert described.current_version == 3
        assert [v.version for v in described.versions] == [1, 2, 3]
        assert _objects(softhsm, version_label(label, 3)) == [(f"{label}#v3", True, False)]

    async def test_wrapped_dek_format(self, backend: Pkcs11Backend, key_id: str) -> None:
        """A wrapped 32-byte DEK is format byte 0x01, a 12-byte IV, 32 bytes and a 16-byte tag."""
        wrapped = await backend.wrap(key_id, b"d" * 32, CONTEXT)
        assert wrapped.wrapped[0] == 0x01
        assert len(wrapped.wrapped) == 1 + 12 + 32 + 16
        again = await backend.wrap(key_id, b"d" * 32, CONTEXT)
        assert again.wrapped[1:13] != wrapped.wrapped[1:13]

    async def test_a_rotation_by_another_backend_is_seen(
        self, backend: Pkcs11Backend, key_id: str, softhsm: SoftHsm
    ) -> None:
        """Wraps follow the highest version on the token, whoever created it."""
        assert (await backend.wrap(key_id, b"d" * 32, {})).key_version == 1
        other = Pkcs11Backend(softhsm.settings())
        try:
            await other.rotate_key(key_id)
        finally:
            await other.close()
        assert (await backend.wrap(key_id, b"d" * 32, {})).key_version == 2

    async def test_disabled_current_version_refuses_to_wrap(
        self, backend: Pkcs11Backend, key_id: str
    ) -> None:
        """Disabling the current version stops new wraps until a rotation or re-enable."""
        await backend.set_version_state(key_id, 1, enabled=False)
        with pytest.raises(KeyStateError):
            await backend.wrap(key_id, b"d" * 32, {})
        with pytest.raises(KeyStateError):
            await backend.generate_data_key(key_id, {})
        await backend.rotate_key(key_id)
        assert (await backend.wrap(key_id, b"d" * 32, {})).key_version == 2

    async def test_unknown_version_of_existing_key(
        self, backend: Pkcs11Backend, key_id: str
    ) -> None:
        """Changing the state of a version that does not exist is a key-state error."""
        with pytest.raises(KeyStateError):
            await backend.set_version_state(key_id, 7, enabled=False)

    @pytest.mark.parametrize(
        "bad_id",
        ["other-token/kek", "test", "test/", "test/kek#v2", "test/" + "x" * 201],
    )
    async def test_key_ids_outside_this_token_are_not_found(
        self, backend: Pkcs11Backend, bad_id: str
    ) -> None:
        """Another token's key, a missing label or a version label is not a key here."""
        with pytest.raises(KmsKeyNotFoundError):
            await backend.describe_key(bad_id)

    async def test_concurrent_calls_share_a_small_session_pool(self, softhsm: SoftHsm) -> None:
        """Many concurrent wraps and unwraps over a few sessions all succeed (and do not crash)."""
        hsm = Pkcs11Backend(softhsm.settings(pool_size=4))
        try:
            key_id = await _new_key(hsm)
            generated = await asyncio.gather(
                *(hsm.generate_data_key(key_id, CONTEXT) for _ in range(100))
            )
            opened = await asyncio.gather(
                *(hsm.unwrap(key_id, g.key_version, g.wrapped, CONTEXT) for g in generated)
            )
            assert opened == [g.plaintext for g in generated]
            assert len(hsm._pool._idle) <= 4
        finally:
            await hsm.close()

    async def test_two_backends_share_one_login(self, softhsm: SoftHsm) -> None:
        """Closing one backend does not log the other out (login is per process)."""
        first = Pkcs11Backend(softhsm.settings())
        second = Pkcs11Backend(softhsm.settings())
        try:
            key_id = await _new_key(first)
            await second.describe_key(key_id)
            await first.close()
            assert (await second.describe_key(key_id)).current_version == 1
        finally:
            await second.close()

    async def test_wrong_pin_is_an_authentication_error(self, softhsm: SoftHsm) -> None:
        """A refused PIN is the broker's credentials problem, not an outage."""
        hsm = Pkcs11Backend(softhsm.settings(pin="0000"))
        try:
            with pytest.raises(KmsAuthenticationError) as caught:
                await hsm.health()
            assert "PIN" not in str(caught.value)
            assert caught.value.__cause__ is not None
        finally:
            await hsm.close()

    async def test_pin_file(self, softhsm: SoftHsm, tmp_path: Path) -> None:
        """The PIN can come from the first line of a file."""
        pin_file = tmp_path / "pin"
        pin_file.write_text(f"{PIN}\n")
        hsm = Pkcs11Backend(softhsm.settings(pin=None, pin_file=str(pin_file)))
        try:
            await hsm.health()
        finally:
            await hsm.close()


class TestPkcs11Settings:
    """Configuration errors name the field and never show the PIN."""

    def test_pin_is_not_in_repr(self) -> None:
        """Logging the settings does not leak the PIN."""
        settings = Pkcs11Settings(token_label=TOKEN_LABEL, pin="s3cret-pin")
        assert "s3cret-pin" not in repr(settings)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"token_label": "", "pin": PIN}, "token_label"),
            ({"token_label": TOKEN_LABEL}, "pin"),
            ({"token_label": TOKEN_LABEL, "pin": PIN, "pin_file": "/x"}, "pin"),
            ({"token_label": TOKEN_LABEL, "pin": PIN, "pool_size": 0}, "pool_size"),
        ],
    )
    def test_invalid_settings(self, kwargs: dict[str, object], field: str) -> None:
        """Each impossible combination is refused with the field's name."""
        with pytest.raises(ConfigError, match=field):
            Pkcs11Settings(**kwargs)  # type: ignore[arg-type]

    def test_unreadable_pin_file(self, tmp_path: Path) -> None:
        """A missing PIN file is a configuration error naming pin_file."""
        settings = Pkcs11Settings(token_label=TOKEN_LABEL, pin_file=str(tmp_path / "absent"))
        with pytest.raises(ConfigError, match="pin_file"):
            settings.read_pin()

    def test_module_that_is_not_pkcs11(self, tmp_path: Path) -> None:
        """A module path that does not load is a configuration error naming module."""
        bogus = tmp_path / "libnothing.so"
        bogus.write_bytes(b"not a shared object")
        with pytest.raises(ConfigError, match="module"):
            Pkcs11Backend(Pkcs11Settings(token_label=TOKEN_LABEL, pin=PIN, module=str(bogus)))
