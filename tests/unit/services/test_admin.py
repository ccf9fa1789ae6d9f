from __future__ import annotations

import pytest
from unit.services.fakes import CALLER, Decision

from broker.errors import (
    KeyNotFoundError,
    KeyStateError,
    KmsUnavailableError,
    PermissionDeniedError,
)
from broker.kms.base import KeyVersionInfo
from broker.services.admin import KeyAdminService
from broker.services.envelope import DecryptItem, EncryptItem, Sealed


@pytest.fixture
def admin(fakes, deks) -> KeyAdminService:
    """Key administration over the shared fakes and the envelope service's DEK provider."""
    return KeyAdminService(fakes.registry(), deks, fakes.authz)


async def seal(envelope, plaintext=b"hello") -> Sealed:
    """Encrypt one item under `default`; must succeed."""
    (result,) = await envelope.encrypt(CALLER, [EncryptItem("default", plaintext)])
    assert isinstance(result, Sealed), result
    return result


async def unseal(envelope, ciphertext):
    """Decrypt one item; the result or the item's error."""
    (result,) = await envelope.decrypt(CALLER, [DecryptItem(ciphertext)])
    return result


class TestDescribe:
    """KeyAdminService.describe and list: configuration and backend metadata, never material."""

    async def test_describe(self, admin):
        """A key is described by name, URI, backend scheme, purpose and versions."""
        described = await admin.describe(CALLER, "payments")
        assert (described.name, described.uri, described.backend, described.purpose) == (
            "payments",
            "fake://kek-payments",
            "fake",
            "envelope",
        )
        assert described.backend_key.current_version == 1

    async def test_list_leaves_out_keys_the_caller_may_not_administer(self, admin, fakes):
        """Listing shows only the keys the policy lets this caller administer."""
        fakes.authz.deny(operation="admin", key="payments")
        names = [d.name for d in await admin.list(CALLER)]
        assert "payments" not in names
        assert names == sorted(names)
        assert "default" in names

    async def test_denied_unknown_key_is_permission_denied(self, admin, fakes):
        """Administration is authorized as `admin` before the key is looked up."""
        fakes.authz.deny(operation="admin")
        with pytest.raises(PermissionDeniedError):
            await admin.describe(CALLER, "ghost")
        assert fakes.authz.decisions == [Decision(CALLER, "ghost", "admin", {}, allowed=False)]

    async def test_allowed_unknown_key_is_key_not_found(self, admin):
        """An administrator learns that a key does not exist."""
        with pytest.raises(KeyNotFoundError):
            await admin.describe(CALLER, "ghost")


class TestRotate:
    """KeyAdminService.rotate: new envelopes use the new version at once; old ones still open."""

    async def test_new_encrypts_use_the_new_version(self, admin, envelope, fakes):
        """The first encrypt after a rotation gets a new DEK under version 2."""
        assert (await seal(envelope)).key_version == 1
        described = await admin.rotate(CALLER, "default")
        assert described.backend_key.current_version == 2
        assert (await seal(envelope)).key_version == 2
        assert fakes.kms.calls["generate_data_key"] == 2

    async def test_old_envelopes_still_decrypt(self, admin, envelope, make_envelope):
        """Envelopes of version 1 open after the rotation, from cache and from the KMS."""
        old = await seal(envelope, b"before")
        await admin.rotate(CALLER, "default")
        assert (await unseal(envelope, old.ciphertext)).plaintext == b"before"
        opened = await unseal(make_envelope(), old.ciphertext)
        assert (opened.plaintext, opened.key_version) == (b"before", 1)

    async def test_rotation_leaves_other_keys_alone(self, admin, envelope, fakes):
        """Rotating one key does not retire another key's DEK."""
        await envelope.encrypt(CALLER, [EncryptItem("payments", b"x")])
        await admin.rotate(CALLER, "default")
        await envelope.encrypt(CALLER, [EncryptItem("payments", b"y")])
        assert fakes.kms.calls["generate_data_key"] == 1

    async def test_failed_rotation_changes_nothing(self, admin, envelope, fakes):
        """A rotation the KMS cannot do fails as KmsUnavailable; sealing stays on version 1."""
        await seal(envelope)
        fakes.kms.down = True
        with pytest.raises(KmsUnavailableError):
            await admin.rotate(CALLER, "default")
        assert (await seal(envelope)).key_version == 1


class TestVersionState:
    """KeyAdminService.set_version_state: a disabled version stops at once, even when cached."""

    async def test_disabled_version_stops_decrypting_at_once(self, admin, envelope):
        """Envelopes of a disabled version fail with KeyState, though their DEK was cached."""
        old = await seal(envelope)
        await admin.rotate(CALLER, "default")
        info = await admin.set_version_state(CALLER, "default", 1, enabled=False)
        assert info == KeyVersionInfo(1, "disabled")
        assert isinstance(await unseal(envelope, old.ciphertext), KeyStateError)

    async def test_reenabled_version_decrypts_again(self, admin, envelope):
        """Enabling the version again restores decryption."""
        old = await seal(envelope)
        await admin.rotate(CALLER, "default")
        await admin.set_version_state(CALLER, "default", 1, enabled=False)
        await admin.set_version_state(CALLER, "default", 1, enabled=True)
        assert (await unseal(envelope, old.ciphertext)).plaintext == b"hello"
