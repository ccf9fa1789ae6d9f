from __future__ import annotations

import pytest
from unit.services.fakes import FakeKms, FakeMacKeys, FakeRsa, FakeSecrets, FakeSigner

from broker.kms.base import (
    DecryptionBackend,
    KmsBackend,
    MacBackend,
    SecretBackend,
    SigningBackend,
)

CAPABILITIES = (KmsBackend, SigningBackend, MacBackend, SecretBackend, DecryptionBackend)


class TestFakes:
    """The fakes offer exactly the backend protocols the services test for at runtime."""

    @pytest.mark.parametrize(
        ("fake", "offers"),
        [
            (FakeKms, {KmsBackend}),
            (FakeSigner, {SigningBackend}),
            (FakeMacKeys, {MacBackend}),
            (FakeSecrets, {SecretBackend}),
            (FakeRsa, {DecryptionBackend}),
        ],
    )
    def test_protocols(self, fake, offers):
        """Each fake passes its protocol's isinstance check and no other capability's."""
        backend = fake("k")
        assert {p for p in CAPABILITIES if isinstance(backend, p)} == offers
