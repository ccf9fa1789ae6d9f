"""The behaviour every `KmsBackend` owes the services layer, as a reusable test class.

Subclass `KmsBackendContract` in a module whose name starts with `test_`, with a name that
starts with `Test`, and provide three fixtures (as methods of the subclass or module-level):

* `backend`: a ready `KmsBackend` (an async fixture may create and close it);
* `key_id`: the id of a fresh, enabled symmetric key the test may rotate and disable;
* `other_key_id`: the id of another such key (for "wrapped under A does not open under B");
* `missing_key_id`: a well-formed id of a key that does not exist.

Then set the class attributes that describe what the backend can do:

* `binds_context` (True): the KMS itself refuses to unwrap under a different context;
* `rotatable` (True): `rotate_key` works and old wrapped DEKs keep unwrapping;
* `versioned` (True): rotation creates a new, visible key version (False when the KMS hides
  versions and always reports 0, as AWS KMS does);
* `enforces_disabled` (True): the server refuses a disabled version (False only for an
  emulator known not to; say which in the subclass);
* `algorithm` ("aes-256-gcm"): what `describe_key` reports for the fixture's keys.

    class TestVaultTransitBackend(KmsBackendContract):
        @pytest.fixture
        async def backend(self, openbao): ...

A test a backend cannot pass for a documented reason is overridden in the subclass with a
docstring giving that reason, never skipped silently.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pytest

from broker.errors import (
    KeyStateError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
)
from broker.kms.base import BackendKey, KmsBackend

CONTEXT = {"tenant": "acme", "purpose": "contract-test"}
OTHER_CONTEXT = {"tenant": "globex", "purpose": "contract-test"}


def flip_bit(data: bytes, index: int) -> bytes:
    """The same bytes with one bit changed at `index` (negative counts from the end)."""
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


class KmsBackendContract:
    """Round trips, context binding, tamper detection, not-found, rotation, versions, health."""

    binds_context: ClassVar[bool] = True
    rotatable: ClassVar[bool] = True
    versioned: ClassVar[bool] = True
    enforces_disabled: ClassVar[bool] = True
    algorithm: ClassVar[str] = "aes-256-gcm"

    async def test_generated_dek_unwraps_to_the_same_bytes(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """A generated DEK is 32 fresh bytes in a bytearray, and its wrapped form opens to it."""
        generated = await backend.generate_data_key(key_id, CONTEXT)
        assert isinstance(generated.plaintext, bytearray)
        assert len(generated.plaintext) == 32
        assert generated.wrapped != bytes(generated.plaintext)
        dek = await backend.unwrap(key_id, generated.key_version, generated.wrapped, CONTEXT)
        assert isinstance(dek, bytearray)
        assert dek == generated.plaintext

    async def test_generated_deks_differ(self, backend: KmsBackend, key_id: str) -> None:
        """Two generated DEKs are different keys."""
        first = await backend.generate_data_key(key_id, CONTEXT)
        second = await backend.generate_data_key(key_id, CONTEXT)
        assert first.plaintext != second.plaintext

    async def test_wrapped_dek_unwraps_to_the_same_bytes(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """A caller-supplied DEK survives wrap and unwrap, with or without a context."""
        dek = os.urandom(32)
        for context in (CONTEXT, {}):
            wrapped = await backend.wrap(key_id, dek, context)
            assert (
                await backend.unwrap(key_id, wrapped.key_version, wrapped.wrapped, context) == dek
            )

    async def test_unwrap_under_another_context_fails(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """A DEK wrapped under one context does not unwrap under another, nor under none.

        A backend that cannot bind the context (`binds_context = False`) must then unwrap it
        regardless, so the envelope header is known to be the only binding.
        """
        dek = os.urandom(32)
        wrapped = await backend.wrap(key_id, dek, CONTEXT)
        for context in (OTHER_CONTEXT, {}, {**CONTEXT, "extra": "pair"}):
            if self.binds_context:
                with pytest.raises(KmsInvalidCiphertextError):
                    await backend.unwrap(key_id, wrapped.key_version, wrapped.wrapped, context)
            else:
                assert (
                    await backend.unwrap(key_id, wrapped.key_version, wrapped.wrapped, context)
                    == dek
                )

    async def test_tampered_wrapped_dek_is_invalid_ciphertext(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """Flipped, truncated or foreign bytes are reported as an invalid ciphertext."""
        wrapped = await backend.wrap(key_id, os.urandom(32), CONTEXT)
        tampered = [
            flip_bit(wrapped.wrapped, -3),
            flip_bit(wrapped.wrapped, len(wrapped.wrapped) // 2),
            wrapped.wrapped[:-8],
            b"\x00" * len(wrapped.wrapped),
        ]
        for blob in tampered:
            with pytest.raises(KmsInvalidCiphertextError):
                await backend.unwrap(key_id, wrapped.key_version, blob, CONTEXT)

    async def test_dek_wrapped_under_one_key_does_not_unwrap_under_another(
        self, backend: KmsBackend, key_id: str, other_key_id: str
    ) -> None:
        """Naming the wrong key on unwrap fails as an invalid ciphertext."""
        wrapped = await backend.wrap(key_id, os.urandom(32), CONTEXT)
        with pytest.raises(KmsInvalidCiphertextError):
            await backend.unwrap(other_key_id, wrapped.key_version, wrapped.wrapped, CONTEXT)

    async def test_missing_key_is_key_not_found(
        self, backend: KmsBackend, missing_key_id: str
    ) -> None:
        """Every operation on a key the KMS does not have raises KmsKeyNotFoundError."""
        with pytest.raises(KmsKeyNotFoundError):
            await backend.generate_data_key(missing_key_id, CONTEXT)
        with pytest.raises(KmsKeyNotFoundError):
            await backend.wrap(missing_key_id, os.urandom(32), CONTEXT)
        with pytest.raises(KmsKeyNotFoundError):
            await backend.describe_key(missing_key_id)

    async def test_describe_key_reports_an_enabled_current_version(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """A fresh key: its id echoed, its current version listed and enabled, no material."""
        key = await backend.describe_key(key_id)
        assert isinstance(key, BackendKey)
        assert key.key_id == key_id
        assert key.rotatable is self.rotatable
        assert key.algorithm == self.algorithm
        current = [v for v in key.versions if v.version == key.current_version]
        assert len(current) == 1
        assert current[0].state == "enabled"
        wrapped = await backend.wrap(key_id, os.urandom(32), {})
        assert wrapped.key_version == key.current_version

    async def test_rotation_keeps_old_deks_and_moves_new_wraps_forward(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """After a rotation old wrapped DEKs unwrap; new wraps report the new current version.

        A backend whose keys cannot rotate (`rotatable = False`) refuses with KeyStateError.
        """
        if not self.rotatable:
            with pytest.raises(KeyStateError):
                await backend.rotate_key(key_id)
            return
        before = await backend.generate_data_key(key_id, CONTEXT)
        rotated = await backend.rotate_key(key_id)
        after = await backend.generate_data_key(key_id, CONTEXT)
        assert await backend.unwrap(key_id, before.key_version, before.wrapped, CONTEXT) == (
            before.plaintext
        )
        assert await backend.unwrap(key_id, after.key_version, after.wrapped, CONTEXT) == (
            after.plaintext
        )
        described = await backend.describe_key(key_id)
        assert after.key_version == described.current_version
        if self.versioned:
            assert rotated.current_version > before.key_version
            assert after.key_version == rotated.current_version
            assert {before.key_version, after.key_version} <= {
                v.version for v in described.versions
            }

    async def test_disabled_version_refuses_and_enabling_restores(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """Disabling the oldest version blocks unwrapping under it; enabling it undoes that."""
        old = await backend.wrap(key_id, b"k" * 32, CONTEXT)
        if self.versioned and self.rotatable:
            await backend.rotate_key(key_id)
        info = await backend.set_version_state(key_id, old.key_version, enabled=False)
        assert (info.version, info.state) == (old.key_version, "disabled")
        states = {v.version: v.state for v in (await backend.describe_key(key_id)).versions}
        assert states[old.key_version] == "disabled"
        if self.enforces_disabled:
            with pytest.raises(KeyStateError):
                await backend.unwrap(key_id, old.key_version, old.wrapped, CONTEXT)
        info = await backend.set_version_state(key_id, old.key_version, enabled=True)
        assert info.state == "enabled"
        assert await backend.unwrap(key_id, old.key_version, old.wrapped, CONTEXT) == b"k" * 32

    async def test_health_passes(self, backend: KmsBackend) -> None:
        """A reachable KMS with valid credentials is healthy."""
        await backend.health()

    async def test_backend_is_a_kms_backend(self, backend: Any) -> None:
        """The object satisfies the protocol the services layer is typed against."""
        assert isinstance(backend, KmsBackend)
        assert isinstance(backend.scheme, str)
        assert backend.scheme
