from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from support.daemon import Daemon

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One dev daemon shared by a test module."""
    d = Daemon(tmp_path_factory.mktemp("kb") / "state").start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.kill()


# Every key type the local backend serves, for the signing, hashing, RSA and KDF API tests.
# The `rot-*` keys are rotated by tests, so the others keep a single version.
KEYS_TOML = """
[keys.default]
uri = "local://default"
[keys.signing]
uri = "local://signing"
purpose = "signing"
[keys.p256]
uri = "local://p256"
purpose = "signing"
algorithm = "ecdsa-p256-sha256"
[keys.ed]
uri = "local://ed"
purpose = "signing"
algorithm = "ed25519"
[keys.pss3072]
uri = "local://pss3072"
purpose = "signing"
algorithm = "rsa-pss-3072-sha256"
[keys.pss4096]
uri = "local://pss4096"
purpose = "signing"
algorithm = "rsa-pss-4096-sha256"
[keys.rsa]
uri = "local://rsa"
purpose = "asymmetric_decrypt"
[keys.hmac]
uri = "local://hmac"
purpose = "hmac"
[keys.derive]
uri = "local://derive"
purpose = "derivation"
[keys.rot-sig]
uri = "local://rot-sig"
purpose = "signing"
algorithm = "ed25519"
[keys.rot-hmac]
uri = "local://rot-hmac"
purpose = "hmac"
[keys.rot-rsa]
uri = "local://rot-rsa"
purpose = "asymmetric_decrypt"
[keys.rot-pepper]
uri = "local://rot-pepper"
purpose = "hmac"
"""


@pytest.fixture(scope="session")
def keys_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with every local key type, shared by the key-operation API tests."""
    root = tmp_path_factory.mktemp("kbkeys")
    config = root / "keys.toml"
    config.write_text(KEYS_TOML)
    d = Daemon(root / "state").start("--config", str(config), timeout=60)
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.kill()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory for daemons with their own environment; all stopped after the test."""
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None, name: str = "state") -> Daemon:
        d = Daemon(tmp_path / name, env)
        started.append(d)
        return d

    yield make
    for d in started:
        try:
            d.stop()
        finally:
            d.kill()
