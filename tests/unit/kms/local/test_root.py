"""wrapped_root_key: the keyring root key kept only in KMS-wrapped form.

A local keyring in another directory plays the KMS here: a real KmsBackend with real
AES-GCM wrapping. The daemon tests run the same code against moto_server and OpenBao.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import pytest

from broker.errors import ConfigError, KmsInvalidCiphertextError, KmsUnavailableError
from broker.kms.local import LocalBackend
from broker.kms.local.keyring import Keyring, load_root_key
from broker.kms.local.root import ROOT_CONTEXT, WRAPPED_FILE, wrapped_root_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from broker.kms.base import GeneratedKey

URI = "vault-transit://transit/root"


@pytest.fixture
async def kms(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    """A 'KMS' holding envelope key transit/root (and transit/other)."""
    home = tmp_path / "kms"
    home.mkdir()
    backend = LocalBackend(Keyring.open(home / "keyring.json", bytes(32)))
    backend.ensure_key("transit/root", "aes-256")
    backend.ensure_key("transit/other", "aes-256")
    yield backend
    await backend.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """An empty state directory."""
    path = tmp_path / "state"
    path.mkdir()
    return path


class TestFirstStartAndRestart:
    """The root key is created once and unwrapped on every later start."""

    async def test_created_then_unwrapped(self, kms, state):
        """Start twice: same key; only the wrapped file exists, 0600, naming the URI."""
        first = await wrapped_root_key(state, URI, kms)
        second = await wrapped_root_key(state, URI, kms)
        assert first == second
        assert len(first) == 32
        assert not (state / "master.key").exists()
        path = state / WRAPPED_FILE
        assert path.stat().st_mode & 0o777 == 0o600
        record = json.loads(path.read_text())
        assert (record["format"], record["uri"], record["key_version"]) == (1, URI, 1)
        assert first.hex() not in path.read_text()

    async def test_wrap_binds_the_root_context(self, kms, state):
        """The wrapped file opens only with the root-key context."""
        root = await wrapped_root_key(state, URI, kms)
        record = json.loads((state / WRAPPED_FILE).read_text())
        wrapped = base64.b64decode(record["wrapped"])
        assert bytes(await kms.unwrap("transit/root", 1, wrapped, ROOT_CONTEXT)) == root
        with pytest.raises(KmsInvalidCiphertextError):
            await kms.unwrap("transit/root", 1, wrapped, {})


class TestRefusals:
    """Every way the wrapped root cannot be used stops the start with one line."""

    async def test_other_uri_is_refused(self, kms, state):
        """A file wrapped by one key is never handed to another."""
        await wrapped_root_key(state, URI, kms)
        other = "vault-transit://transit/other"
        with pytest.raises(ConfigError, match=f"was wrapped by {URI}, not {other}"):
            await wrapped_root_key(state, other, kms)

    async def test_kms_refusal_names_the_uri(self, kms, state):
        """A KMS that cannot unwrap (here: the key's version disabled) names the URI."""
        await wrapped_root_key(state, URI, kms)
        await kms.rotate_key("transit/root")
        await kms.set_version_state("transit/root", 1, enabled=False)
        with pytest.raises(ConfigError, match=f"^keyring.master_key_uri: {URI} did not unwrap"):
            await wrapped_root_key(state, URI, kms)

    async def test_unreachable_kms_names_the_uri(self, state):
        """An unavailable KMS is a start failure naming the URI and the reason."""

        class Down(LocalBackend):
            async def generate_data_key(self, *_: object) -> GeneratedKey:
                raise KmsUnavailableError

        down = Down(Keyring.open(state.parent / "down.json", bytes(32)))
        with pytest.raises(ConfigError, match="unavailable"):
            await wrapped_root_key(state, URI, down)
        assert not (state / WRAPPED_FILE).exists()

    @pytest.mark.parametrize(
        "content", ["not json", '{"format": 2}', '{"format": 1, "uri": "x"}', "[]"]
    )
    async def test_damaged_file(self, kms, state, content):
        """A damaged file is named, with the fix."""
        path = state / WRAPPED_FILE
        path.write_text(content)
        path.chmod(0o600)
        with pytest.raises(ConfigError, match="not a wrapped keyring root key; restore it"):
            await wrapped_root_key(state, URI, kms)

    async def test_readable_file_is_refused(self, kms, state):
        """A wrapped root readable by others is refused like master.key."""
        await wrapped_root_key(state, URI, kms)
        (state / WRAPPED_FILE).chmod(0o644)
        with pytest.raises(ConfigError, match="chmod 600"):
            await wrapped_root_key(state, URI, kms)

    async def test_keyring_without_root_file(self, kms, state):
        """An existing keyring is never given a fresh root key it was not made with."""
        (state / "keyring.json").write_text("{}")
        with pytest.raises(ConfigError, match="restore the root key file from backup"):
            await wrapped_root_key(state, URI, kms)


class TestMigration:
    """A plain master.key is wrapped, proven, then removed."""

    async def test_plain_key_is_wrapped_and_removed(self, kms, state):
        """The root key stays the same; master.key is gone afterwards."""
        plain = load_root_key(state, None)
        assert await wrapped_root_key(state, URI, kms) == plain
        assert not (state / "master.key").exists()
        assert await wrapped_root_key(state, URI, kms) == plain

    async def test_failed_migration_keeps_master_key(self, state):
        """If the wrap cannot be proven, master.key stays and no wrapped file is left."""

        class Forgetful(LocalBackend):
            async def unwrap(self, *_: object) -> bytearray:
                raise KmsUnavailableError

        load_root_key(state, None)
        forgetful = Forgetful(Keyring.open(state.parent / "f.json", bytes(32)))
        forgetful.ensure_key("transit/root", "aes-256")
        with pytest.raises(ConfigError, match="unavailable"):
            await wrapped_root_key(state, URI, forgetful)
        assert (state / "master.key").exists()
        assert not (state / WRAPPED_FILE).exists()
