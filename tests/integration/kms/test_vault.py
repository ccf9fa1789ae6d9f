from __future__ import annotations

import asyncio
import base64
import os
import uuid
from typing import TYPE_CHECKING

import hvac.exceptions
import pytest
import requests.exceptions
from integration.kms.contract import CONTEXT, OTHER_CONTEXT, KmsBackendContract
from integration.kms.openbao import OpenBaoServer, TokenReviewApi, start_openbao, transit_policy
from integration.kms.servers import free_port

from broker.errors import (
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    WrongKeyPurposeError,
)
from broker.kms.vault import VaultSettings, VaultTransitBackend
from broker.kms.vault.errors import map_error
from broker.kms.vault.keys import b64decode

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

POLICY = "keybroker-transit"


@pytest.fixture(scope="module")
def openbao() -> Iterator[OpenBaoServer]:
    """One OpenBao dev server for the module, with the documented transit policy."""
    with OpenBaoServer() as server:
        server.write_policy(POLICY, transit_policy())
        yield server


@pytest.fixture(scope="module")
def approle(openbao: OpenBaoServer) -> tuple[str, str]:
    """A role holding only the documented transit policy."""
    return openbao.create_approle("keybroker", policies=[POLICY])


def approle_settings(openbao: OpenBaoServer, approle: tuple[str, str]) -> VaultSettings:
    """Settings that log in with the module's AppRole."""
    role_id, secret_id = approle
    return VaultSettings(address=openbao.url, auth="approle", role_id=role_id, secret_id=secret_id)


def new_key(openbao: OpenBaoServer, **options: object) -> str:
    """A fresh transit key (a unique name per test); returns MOUNT/NAME."""
    return openbao.create_key(f"k-{uuid.uuid4().hex[:12]}", **options)  # type: ignore[arg-type]


@pytest.fixture
async def backend(
    openbao: OpenBaoServer, approle: tuple[str, str]
) -> AsyncIterator[VaultTransitBackend]:
    """A backend logged in by AppRole, closed after the test."""
    transit = VaultTransitBackend(approle_settings(openbao, approle))
    yield transit
    await transit.close()


class TestVaultTransitBackend(KmsBackendContract):
    """The KmsBackend contract against OpenBao, logged in by AppRole with the documented policy."""

    @pytest.fixture
    def key_id(self, openbao: OpenBaoServer) -> str:
        """A fresh aes256-gcm96 key."""
        return new_key(openbao)

    @pytest.fixture
    def other_key_id(self, openbao: OpenBaoServer) -> str:
        """Another fresh aes256-gcm96 key."""
        return new_key(openbao)

    @pytest.fixture
    def missing_key_id(self) -> str:
        """A well-formed id on an existing mount, of a key that does not exist."""
        return "transit/no-such-key"


class TestVaultContextBinding:
    """Vault binds the context itself whenever the key type allows it."""

    async def test_vault_refuses_the_dek_without_its_associated_data(
        self, backend: VaultTransitBackend, openbao: OpenBaoServer
    ) -> None:
        """Decrypting through the raw API without the context fails: Vault holds the binding."""
        key_id = new_key(openbao)
        wrapped = await backend.wrap(key_id, b"d" * 32, CONTEXT)
        status, answer = openbao.api(
            "POST", f"{key_id.replace('/', '/decrypt/')}", {"ciphertext": wrapped.wrapped.decode()}
        )
        assert status == 400
        assert "authentication failed" in answer["errors"][0]

    async def test_derived_key_binds_the_context_by_derivation(
        self, backend: VaultTransitBackend, openbao: OpenBaoServer
    ) -> None:
        """A derived key takes the context as derivation input, the empty context included."""
        key_id = new_key(openbao, derived=True)
        for context in (CONTEXT, {}):
            generated = await backend.generate_data_key(key_id, context)
            dek = await backend.unwrap(key_id, 1, generated.wrapped, context)
            assert dek == generated.plaintext
        with pytest.raises(KmsInvalidCiphertextError):
            await backend.unwrap(key_id, 1, generated.wrapped, OTHER_CONTEXT)

    async def test_rsa_key_cannot_bind_the_context(
        self, backend: VaultTransitBackend, openbao: OpenBaoServer
    ) -> None:
        """RSA transit keys have no associated data: the envelope header is the only binding."""
        key_id = new_key(openbao, key_type="rsa-2048")
        generated = await backend.generate_data_key(key_id, CONTEXT)
        assert await backend.unwrap(key_id, 1, generated.wrapped, OTHER_CONTEXT) == (
            generated.plaintext
        )
        assert (await backend.describe_key(key_id)).algorithm == "rsa-2048"

    async def test_signing_key_is_the_wrong_purpose(
        self, backend: VaultTransitBackend, openbao: OpenBaoServer
    ) -> None:
        """An ed25519 transit key cannot wrap DEKs."""
        key_id = new_key(openbao, key_type="ed25519")
        with pytest.raises(WrongKeyPurposeError):
            await backend.wrap(key_id, b"d" * 32, CONTEXT)
        with pytest.raises(WrongKeyPurposeError):
            await backend.generate_data_key(key_id, CONTEXT)


class TestVaultVersions:
    """Versions map to Transit's `vN` prefix and min_decryption_version."""

    async def test_wrapped_dek_is_the_transit_ciphertext(
        self, backend: VaultTransitBackend, openbao: OpenBaoServer
    ) -> None:
        """The wrapped bytes are `vault:vN:...` in UTF-8 and N is the reported version."""
        key_id = new_key(openbao)
        await backend.rotate_key(key_id)
        wrapped = await backend.wrap(key_id, b"d" * 32, {})
        assert wrapped.wrapped.startswith(b"vault:v2:")
        assert wrapped.key_version == 2

    async def test_versions_are_disabled_oldest_first_and_enabled_newest_first(
        self, backend: VaultTransitBackend, openbao: OpenBaoServer
    ) -> None:
        """Only the lowest enabled version can be disabled, never the current one."""
        key_id = new_key(openbao)
        await backend.rotate_key(key_id)
        await backend.rotate_key(key_id)
        with pytest.raises(KeyStateError, match="only version 1"):
            await backend.set_version_state(key_id, 2, enabled=False)
        assert (await backend.set_version_state(key_id, 1, enabled=False)).state == "disabled"
        assert (await backend.set_version_state(key_id, 2, enabled=False)).state == "disabled"
        with pytest.raises(KeyStateError, match="current version"):
            await backend.set_version_state(key_id, 3, enabled=False)
        with pytest.raises(KeyStateError, match="only version 2"):
            await backend.set_version_state(key_id, 1, enabled=True)
        assert (await backend.set_version_state(key_id, 2, enabled=True)).state == "enabled"
        with pytest.raises(KmsKeyNotFoundError):
            await backend.set_version_state(key_id, 9, enabled=True)
        states = [v.state for v in (await backend.describe_key(key_id)).versions]
        assert states == ["disabled", "enabled", "enabled"]

    async def test_nested_mount(self, backend: VaultTransitBackend, openbao: OpenBaoServer) -> None:
        """The mount may contain slashes; the name is the last segment."""
        mount = f"team-{uuid.uuid4().hex[:6]}/transit"
        openbao.enable_transit(mount)
        openbao.write_policy(POLICY, transit_policy() + transit_policy(mount))
        key_id = openbao.create_key("nested", mount=mount)
        generated = await backend.generate_data_key(key_id, CONTEXT)
        assert await backend.unwrap(key_id, 1, generated.wrapped, CONTEXT) == generated.plaintext

    @pytest.mark.parametrize(
        "key_id", ["nomount", "transit/", "/name", "transit/../sys/x", "transit/a b", "t//k"]
    )
    async def test_malformed_key_id_is_not_found(
        self, backend: VaultTransitBackend, key_id: str
    ) -> None:
        """Key ids that are not MOUNT/NAME never reach the server."""
        with pytest.raises(KmsKeyNotFoundError):
            await backend.wrap(key_id, b"d" * 32, {})

    async def test_non_transit_bytes_are_invalid_ciphertext(
        self, backend: VaultTransitBackend, openbao: OpenBaoServer
    ) -> None:
        """A wrapped DEK that is not a Transit ciphertext fails before any request."""
        key_id = new_key(openbao)
        for blob in (b"vault:v1:", b"vault:v0:AAAA", b"\xff\xfe", b"vault:v1:AA AA"):
            with pytest.raises(KmsInvalidCiphertextError):
                await backend.unwrap(key_id, 1, blob, {})


class TestVaultAuth:
    """Token, AppRole and Kubernetes logins; renewal; re-login after a refused call."""

    async def test_approle_login(self, openbao: OpenBaoServer, approle: tuple[str, str]) -> None:
        """AppRole credentials are exchanged for a token that serves calls."""
        transit = VaultTransitBackend(approle_settings(openbao, approle))
        try:
            await transit.health()
            await transit.generate_data_key(new_key(openbao), CONTEXT)
            assert transit._tokens.generation == 1
        finally:
            await transit.close()

    async def test_wrong_approle_secret_is_authentication_error(
        self, openbao: OpenBaoServer, approle: tuple[str, str]
    ) -> None:
        """A secret_id Vault does not know is refused as the broker's credentials."""
        settings = VaultSettings(
            address=openbao.url,
            auth="approle",
            role_id=approle[0],
            secret_id="wrong",  # noqa: S106
        )
        transit = VaultTransitBackend(settings)
        try:
            with pytest.raises(KmsAuthenticationError):
                await transit.health()
        finally:
            await transit.close()

    async def test_bad_token_is_authentication_error(self, openbao: OpenBaoServer) -> None:
        """A token Vault does not know fails health and every operation as authentication."""
        transit = VaultTransitBackend(VaultSettings(address=openbao.url, token="s.not-a-token"))  # noqa: S106
        try:
            with pytest.raises(KmsAuthenticationError):
                await transit.health()
            with pytest.raises(KmsAuthenticationError):
                await transit.generate_data_key(new_key(openbao), CONTEXT)
        finally:
            await transit.close()

    async def test_expiring_token_is_renewed(self, openbao: OpenBaoServer) -> None:
        """A 2 s renewable token used every 0.5 s still works after 3 s: it was renewed."""
        token = openbao.mint_token(policies=[POLICY], ttl="2s")
        key_id = new_key(openbao)
        transit = VaultTransitBackend(VaultSettings(address=openbao.url, token=token))
        try:
            for _ in range(6):
                await transit.generate_data_key(key_id, CONTEXT)
                await asyncio.sleep(0.5)
            await transit.generate_data_key(key_id, CONTEXT)
        finally:
            await transit.close()

    async def test_expired_approle_token_is_replaced_by_a_new_login(
        self, openbao: OpenBaoServer
    ) -> None:
        """A token at its max TTL cannot be renewed: the backend logs in again."""
        role = openbao.create_approle("short", policies=[POLICY], ttl="2s", max_ttl="2s")
        settings = VaultSettings(
            address=openbao.url, auth="approle", role_id=role[0], secret_id=role[1]
        )
        transit = VaultTransitBackend(settings)
        key_id = new_key(openbao)
        try:
            await transit.generate_data_key(key_id, CONTEXT)
            await asyncio.sleep(2.2)
            await transit.generate_data_key(key_id, CONTEXT)
            assert transit._tokens.generation == 2
        finally:
            await transit.close()

    async def test_revoked_token_triggers_one_login_and_a_retry(
        self, openbao: OpenBaoServer, approle: tuple[str, str]
    ) -> None:
        """A 403 on a token the backend thought valid: log in again, retry once, succeed."""
        transit = VaultTransitBackend(approle_settings(openbao, approle))
        key_id = new_key(openbao)
        try:
            await transit.generate_data_key(key_id, CONTEXT)
            openbao.revoke_token(transit._client.token)
            await transit.generate_data_key(key_id, CONTEXT)
            assert transit._tokens.generation == 2
        finally:
            await transit.close()

    async def test_policy_denial_is_authentication_error_without_new_logins(
        self, openbao: OpenBaoServer
    ) -> None:
        """A live token refused by policy is not replaced: logging in again would not help."""
        openbao.write_policy("read-only", transit_policy().splitlines()[0])
        role_id, secret_id = openbao.create_approle("read-only", policies=["read-only"])
        settings = VaultSettings(
            address=openbao.url, auth="approle", role_id=role_id, secret_id=secret_id
        )
        transit = VaultTransitBackend(settings)
        key_id = new_key(openbao)
        try:
            assert (await transit.describe_key(key_id)).current_version == 1
            for _ in range(2):
                with pytest.raises(KmsAuthenticationError):
                    await transit.generate_data_key(key_id, CONTEXT)
            assert transit._tokens.generation == 1
        finally:
            await transit.close()

    async def test_kubernetes_login(self, openbao: OpenBaoServer, tmp_path: Path) -> None:
        """The service-account JWT file is exchanged for a token through kubernetes auth."""
        with TokenReviewApi() as api:
            openbao.enable_kubernetes_auth(api, "keybroker", policies=[POLICY])
            jwt_path = tmp_path / "token"
            jwt_path.write_text(api.service_account_jwt("payments", "keybroker") + "\n")
            settings = VaultSettings(
                address=openbao.url,
                auth="kubernetes",
                kubernetes_role="keybroker",
                kubernetes_jwt_path=str(jwt_path),
            )
            transit = VaultTransitBackend(settings)
            try:
                await transit.generate_data_key(new_key(openbao), CONTEXT)
                jwt_path.write_text("not-a-jwt")
                openbao.revoke_token(transit._client.token)
                with pytest.raises(KmsAuthenticationError):
                    await transit.health()
                jwt_path.unlink()
                with pytest.raises(KmsAuthenticationError, match="kubernetes_jwt_path"):
                    await transit.health()
            finally:
                await transit.close()


class TestVaultAvailability:
    """Connection failures, outages and sealing are KmsUnavailableError."""

    async def test_connection_refused_is_unavailable(self) -> None:
        """Nothing listening at the address."""
        address = f"http://127.0.0.1:{free_port()}"
        transit = VaultTransitBackend(VaultSettings(address=address, token="t"))  # noqa: S106
        try:
            with pytest.raises(KmsUnavailableError):
                await transit.health()
            with pytest.raises(KmsUnavailableError):
                await transit.wrap("transit/k", b"d" * 32, {})
        finally:
            await transit.close()

    async def test_stopped_and_sealed_server_is_unavailable_then_recovers(self) -> None:
        """A persistent server: stopped or sealed means unavailable; old DEKs unwrap after."""
        with start_openbao(persistent=True) as server:
            key_id = server.create_key("durable")
            settings = VaultSettings(address=server.url, token=server.root_token)
            transit = VaultTransitBackend(settings)
            try:
                generated = await transit.generate_data_key(key_id, CONTEXT)
                server.stop()
                with pytest.raises(KmsUnavailableError):
                    await transit.unwrap(key_id, 1, generated.wrapped, CONTEXT)
                server.start()
                dek = await transit.unwrap(key_id, 1, generated.wrapped, CONTEXT)
                assert dek == generated.plaintext
                server.api("POST", "sys/seal")
                with pytest.raises(KmsUnavailableError):
                    await transit.health()
            finally:
                await transit.close()

    async def test_closed_backend_is_unavailable(self, openbao: OpenBaoServer) -> None:
        """After close() a call fails as unavailable instead of hanging."""
        transit = VaultTransitBackend(VaultSettings(address=openbao.url, token="t"))  # noqa: S106
        await transit.close()
        with pytest.raises(KmsUnavailableError):
            await transit.health()


class TestVaultSettings:
    """Settings fail early and never show secrets."""

    def test_repr_hides_secrets(self) -> None:
        """Token, role_id and secret_id stay out of reprs (and so out of logs)."""
        settings = VaultSettings(
            address="http://127.0.0.1:8200",
            auth="approle",
            token="hvs.tok3n",  # noqa: S106 - dummy
            role_id="r0le",
            secret_id="s3cr3t",  # noqa: S106 - dummy
        )
        text = repr(settings) + repr(VaultTransitBackend(settings))
        for secret in ("hvs.tok3n", "r0le", "s3cr3t"):
            assert secret not in text

    @pytest.mark.parametrize(
        ("fields", "names"),
        [
            ({"address": "127.0.0.1:8200"}, "address"),
            ({"auth": "approle", "role_id": "r"}, "secret_id"),
            ({"auth": "kubernetes"}, "kubernetes_role"),
            ({"auth": "ldap"}, "auth"),
            ({"timeout": 0}, "timeout"),
        ],
    )
    def test_invalid_settings_name_the_field(self, fields: dict[str, object], names: str) -> None:
        """Each invalid field is refused at construction with its name in the message."""
        values: dict[str, object] = {"address": "http://127.0.0.1:8200", **fields}
        with pytest.raises(ConfigError, match=names):
            VaultSettings(**values)  # type: ignore[arg-type]

    def test_token_auth_needs_a_token(self) -> None:
        """Auth = token without a token (and without a client carrying one) is refused."""
        with pytest.raises(ConfigError, match="token"):
            VaultTransitBackend(VaultSettings(address="http://127.0.0.1:8200"))


def vault_error(cls: type[hvac.exceptions.VaultError], message: str) -> Exception:
    """An hvac exception as the adapter raises it."""
    return cls(message, errors=[message], method="POST", url="http://vault/v1/transit/x")


class TestVaultErrorMapping:
    """Failures the servers above cannot be made to produce map like the others."""

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (vault_error(hvac.exceptions.RateLimitExceeded, "rate limited"), KmsUnavailableError),
            (vault_error(hvac.exceptions.InternalServerError, "boom"), KmsUnavailableError),
            (vault_error(hvac.exceptions.BadGateway, "proxy"), KmsUnavailableError),
            (requests.exceptions.ReadTimeout("read timed out"), KmsUnavailableError),
            (vault_error(hvac.exceptions.Forbidden, "permission denied"), KmsAuthenticationError),
            (vault_error(hvac.exceptions.InvalidPath, ""), KmsKeyNotFoundError),
            (
                vault_error(
                    hvac.exceptions.InvalidRequest,
                    "ciphertext or signature version is disallowed by policy (too old)",
                ),
                KeyStateError,
            ),
            (vault_error(hvac.exceptions.InvalidRequest, "something else"), KmsError),
            (vault_error(hvac.exceptions.UnexpectedError, "teapot"), KmsError),
        ],
    )
    def test_maps_without_vault_text(self, error: Exception, expected: type[Exception]) -> None:
        """Each failure becomes exactly one broker error whose message holds no Vault text."""
        mapped = map_error(error)
        assert type(mapped) is expected
        assert "vault" not in str(mapped).lower()

    def test_plaintext_is_returned_in_a_bytearray(self) -> None:
        """The decoded DEK is wipeable."""
        decoded = b64decode(base64.b64encode(os.urandom(32)).decode())
        assert isinstance(decoded, bytearray)
