from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from integration.kms.contract import CONTEXT, KmsBackendContract, flip_bit
from integration.kms.servers import MotoServer, free_port

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
from broker.kms._lazy import import_extra
from broker.kms.aws import AwsKmsBackend, AwsKmsSettings
from broker.kms.aws import backend as aws

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from broker.kms.base import KmsBackend

MISSING_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """One moto_server for the module."""
    with MotoServer() as server:
        yield server


def settings_for(moto: MotoServer, **overrides: object) -> AwsKmsSettings:
    """Settings pointing at `moto` with its dummy credentials, plus `overrides`."""
    values: dict[str, object] = {
        "region": moto.region,
        "endpoint_url": moto.url,
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        **overrides,
    }
    return AwsKmsSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def backend(moto: MotoServer) -> AsyncIterator[AwsKmsBackend]:
    """A backend on the module's moto_server, closed after the test."""
    kms = AwsKmsBackend(settings_for(moto))
    yield kms
    await kms.close()


class TestAwsKmsBackend(KmsBackendContract):
    """The KmsBackend contract against moto_server's KMS API."""

    versioned = False  # KMS keeps material versions behind one key id: always 0
    enforces_disabled = False  # moto accepts Encrypt/Decrypt on a Disabled key; AWS refuses

    @pytest.fixture
    def key_id(self, moto: MotoServer) -> str:
        """A fresh symmetric KMS key."""
        return moto.create_key()

    @pytest.fixture
    def other_key_id(self, moto: MotoServer) -> str:
        """Another fresh symmetric KMS key."""
        return moto.create_key()

    @pytest.fixture
    def missing_key_id(self) -> str:
        """A well-formed ARN of a key that does not exist."""
        return MISSING_KEY

    async def test_tampered_wrapped_dek_is_invalid_ciphertext(
        self, backend: KmsBackend, key_id: str
    ) -> None:
        """Flips and truncation are invalid ciphertext; foreign bytes are refused.

        moto reads a key id from a foreign blob's first bytes and answers AccessDenied where
        AWS answers InvalidCiphertextException, so both are accepted for that one case.
        """
        wrapped = await backend.wrap(key_id, os.urandom(32), CONTEXT)
        blob = wrapped.wrapped
        for tampered in (flip_bit(blob, -3), flip_bit(blob, len(blob) // 2), blob[:-8]):
            with pytest.raises(KmsInvalidCiphertextError):
                await backend.unwrap(key_id, 0, tampered, CONTEXT)
        with pytest.raises((KmsInvalidCiphertextError, KmsAuthenticationError)):
            await backend.unwrap(key_id, 0, b"\x00" * len(blob), CONTEXT)

    async def test_dek_wrapped_under_one_key_does_not_unwrap_under_another(
        self, backend: KmsBackend, key_id: str, other_key_id: str
    ) -> None:
        """Refused: AWS answers IncorrectKeyException (invalid ciphertext), moto AccessDenied."""
        wrapped = await backend.wrap(key_id, os.urandom(32), CONTEXT)
        with pytest.raises((KmsInvalidCiphertextError, KmsAuthenticationError)):
            await backend.unwrap(other_key_id, 0, wrapped.wrapped, CONTEXT)


class TestAwsKmsSpecifics:
    """What only the AWS backend does: aliases, KMS-side context, credentials, transport."""

    async def test_alias_works_for_every_operation(
        self, backend: AwsKmsBackend, moto: MotoServer
    ) -> None:
        """`aws-kms://alias/NAME` wraps, unwraps, describes, rotates and toggles the key."""
        moto.create_key(alias="payments")
        generated = await backend.generate_data_key("alias/payments", CONTEXT)
        assert await backend.unwrap("alias/payments", 0, generated.wrapped, CONTEXT) == (
            generated.plaintext
        )
        assert (await backend.rotate_key("alias/payments")).key_id == "alias/payments"
        info = await backend.set_version_state("alias/payments", 0, enabled=False)
        assert info.state == "disabled"
        info = await backend.set_version_state("alias/payments", 0, enabled=True)
        assert info.state == "enabled"

    async def test_encryption_context_is_enforced_by_kms(
        self, backend: AwsKmsBackend, moto: MotoServer
    ) -> None:
        """KMS itself refuses the blob without the context: the binding is not ours."""
        key_id = moto.create_key()
        wrapped = await backend.wrap(key_id, b"d" * 32, CONTEXT)
        kms = moto.client()
        with pytest.raises(ClientError) as refused:
            kms.decrypt(KeyId=key_id, CiphertextBlob=wrapped.wrapped)
        assert refused.value.response["Error"]["Code"] == "InvalidCiphertextException"
        opened = kms.decrypt(
            KeyId=key_id, CiphertextBlob=wrapped.wrapped, EncryptionContext=CONTEXT
        )
        assert opened["Plaintext"] == b"d" * 32

    async def test_rotation_is_recorded_by_kms(
        self, backend: AwsKmsBackend, moto: MotoServer
    ) -> None:
        """rotate_key issues RotateKeyOnDemand, which KMS lists as an on-demand rotation."""
        key_id = moto.create_key()
        await backend.rotate_key(key_id)
        rotations = moto.client().list_key_rotations(KeyId=key_id)["Rotations"]
        assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]

    async def test_disabling_version_zero_disables_the_kms_key(
        self, backend: AwsKmsBackend, moto: MotoServer
    ) -> None:
        """Version 0 is the whole KMS key: disabling it is DisableKey; no other version exists."""
        key_id = moto.create_key()
        await backend.set_version_state(key_id, 0, enabled=False)
        assert moto.client().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
        with pytest.raises(KmsKeyNotFoundError):
            await backend.set_version_state(key_id, 1, enabled=False)

    async def test_unknown_access_key_is_authentication_error(self, moto: MotoServer) -> None:
        """Credentials KMS does not know are a configuration problem, not an outage."""
        key_id = moto.create_key()
        stranger = AwsKmsBackend(settings_for(moto, access_key_id="AKIANOSUCHKEY000000"))
        try:
            with moto.iam_enforced():
                with pytest.raises(KmsAuthenticationError):
                    await stranger.health()
                with pytest.raises(KmsAuthenticationError):
                    await stranger.generate_data_key(key_id, CONTEXT)
        finally:
            await stranger.close()

    async def test_denied_action_is_authentication_error(self, moto: MotoServer) -> None:
        """An IAM user allowed only DescribeKey may describe but not generate."""
        key_id = moto.create_key()
        access_key, secret = moto.create_iam_user("describer", ["kms:DescribeKey"])
        limited = AwsKmsBackend(
            settings_for(moto, access_key_id=access_key, secret_access_key=secret)
        )
        try:
            with moto.iam_enforced():
                assert (await limited.describe_key(key_id)).key_id == key_id
                with pytest.raises(KmsAuthenticationError):
                    await limited.generate_data_key(key_id, CONTEXT)
        finally:
            await limited.close()

    async def test_connection_refused_is_unavailable(self) -> None:
        """Nothing listening on the endpoint: KmsUnavailableError, quickly and without retries."""
        closed = AwsKmsBackend(
            AwsKmsSettings(
                region="us-east-1",
                endpoint_url=f"http://127.0.0.1:{free_port()}",
                access_key_id="testing",
                secret_access_key="testing",  # noqa: S106 - dummy
            )
        )
        try:
            with pytest.raises(KmsUnavailableError):
                await closed.health()
            with pytest.raises(KmsUnavailableError):
                await closed.generate_data_key(MISSING_KEY, CONTEXT)
        finally:
            await closed.close()

    async def test_server_down_then_back(self) -> None:
        """A stopped KMS is unavailable; once it is back the same backend serves again."""
        with MotoServer() as server:
            kms = AwsKmsBackend(settings_for(server))
            try:
                await kms.health()
                server.stop()
                with pytest.raises(KmsUnavailableError):
                    await kms.health()
                server.start()
                await kms.health()
                await kms.generate_data_key(server.create_key(), CONTEXT)
            finally:
                await kms.close()

    async def test_hung_kms_does_not_block_the_event_loop(self) -> None:
        """While KMS hangs, the event loop keeps running other tasks."""
        with MotoServer() as server:
            kms = AwsKmsBackend(settings_for(server, read_timeout=10))
            key_id = server.create_key()
            try:
                server.suspend()
                call = asyncio.create_task(kms.generate_data_key(key_id, CONTEXT))
                ticks = 0
                for _ in range(10):
                    await asyncio.sleep(0.02)
                    ticks += 1
                assert ticks == 10
                assert not call.done()
                server.resume()
                assert len((await call).plaintext) == 32
            finally:
                server.resume()
                await kms.close()

    async def test_closed_backend_is_unavailable(self, moto: MotoServer) -> None:
        """After close() a call fails as unavailable instead of hanging."""
        kms = AwsKmsBackend(settings_for(moto))
        await kms.close()
        with pytest.raises(KmsUnavailableError):
            await kms.health()

    async def test_injected_client_is_used_and_left_open(self, moto: MotoServer) -> None:
        """A caller-supplied boto3 client serves the calls and stays the caller's to close."""
        client = moto.client()
        kms = AwsKmsBackend(AwsKmsSettings(), client=client)
        key_id = moto.create_key()
        await kms.generate_data_key(key_id, CONTEXT)
        await kms.close()
        assert client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"]


class TestAwsKmsSettings:
    """Settings fail early and never show secrets."""

    def test_repr_hides_credentials(self) -> None:
        """Keys and tokens stay out of the repr (and so out of logs)."""
        settings = AwsKmsSettings(
            access_key_id="AKIAEXAMPLE",
            secret_access_key="s3cr3t",  # noqa: S106 - dummy
            session_token="t0k3n",  # noqa: S106 - dummy
        )
        text = repr(settings) + repr(AwsKmsBackend(settings, client=object()))
        assert "AKIAEXAMPLE" not in text
        assert "s3cr3t" not in text
        assert "t0k3n" not in text

    @pytest.mark.parametrize(
        ("fields", "names"),
        [
            ({"access_key_id": "AKIA"}, "secret_access_key"),
            ({"endpoint_url": "127.0.0.1:5000"}, "endpoint_url"),
            ({"max_attempts": 0}, "max_attempts"),
            ({"read_timeout": 0}, "read_timeout"),
        ],
    )
    def test_invalid_settings_name_the_field(self, fields: dict[str, object], names: str) -> None:
        """Each invalid field is refused at construction with its name in the message."""
        with pytest.raises(ConfigError, match=names):
            AwsKmsSettings(**fields)  # type: ignore[arg-type]

    def test_unknown_profile_is_config_error(self) -> None:
        """A profile missing from the AWS config files is reported as configuration."""
        with pytest.raises(ConfigError, match="profile"):
            AwsKmsBackend(AwsKmsSettings(region="us-east-1", profile="no-such-profile-kb"))

    def test_missing_sdk_names_the_extra(self) -> None:
        """A missing SDK says which keybroker extra installs it."""
        with pytest.raises(ConfigError, match=r"keybroker\[aws\]"):
            import_extra("keybroker_no_such_sdk", "aws")


def client_error(code: str, status: int = 400) -> ClientError:
    """A real botocore ClientError as the SDK raises it, for codes moto never returns."""
    response: Any = {
        "Error": {"Code": code, "Message": "arn:aws:kms:secret"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Decrypt")


class TestAwsErrorMapping:
    """Error codes moto cannot produce map like the ones it can, with no SDK text."""

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (client_error("DisabledException"), KeyStateError),
            (client_error("KMSInvalidStateException"), KeyStateError),
            (client_error("InvalidKeyUsageException"), WrongKeyPurposeError),
            (client_error("IncorrectKeyException"), KmsInvalidCiphertextError),
            (client_error("InvalidCiphertextException"), KmsInvalidCiphertextError),
            (client_error("NotFoundException"), KmsKeyNotFoundError),
            (client_error("AccessDeniedException"), KmsAuthenticationError),
            (client_error("ExpiredTokenException"), KmsAuthenticationError),
            (client_error("ThrottlingException"), KmsUnavailableError),
            (client_error("KMSInternalException", 500), KmsUnavailableError),
            (client_error("SomethingNew", 503), KmsUnavailableError),
            (client_error("SomethingNew", 400), KmsError),
            (EndpointConnectionError(endpoint_url="http://x"), KmsUnavailableError),
            (NoCredentialsError(), KmsAuthenticationError),
        ],
    )
    def test_maps_without_sdk_text(self, error: Exception, expected: type[Exception]) -> None:
        """Each SDK failure becomes exactly one broker error whose message holds no SDK text."""
        mapped = aws._map_error(error)
        assert type(mapped) is expected
        assert "arn:" not in str(mapped)
