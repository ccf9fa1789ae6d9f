"""The GCP Cloud KMS backend: the real google-cloud-kms client against the in-test server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import google_crc32c
import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import kms
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)
from integration.kms.contract import CONTEXT, KmsBackendContract
from integration.kms.gcp_server import GcpKmsServer

from broker.errors import (
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
)
from broker.kms.gcp import GcpKmsBackend, GcpKmsSettings, context_aad
from broker.kms.resilience import ResilienceSettings, ResilientBackend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

RING = "projects/keybroker-test/locations/global/keyRings/ring"


@pytest.fixture
def server() -> Iterator[GcpKmsServer]:
    """The in-test KeyManagementService on a free 127.0.0.1 port."""
    with GcpKmsServer() as running:
        yield running


def raw_client(server: GcpKmsServer) -> Any:
    """A real KeyManagementServiceClient over a plaintext channel to the in-test server."""
    channel = grpc.insecure_channel(server.endpoint)
    return kms.KeyManagementServiceClient(
        transport=KeyManagementServiceGrpcTransport(channel=channel)
    )


@pytest.fixture
def client(server: GcpKmsServer) -> Iterator[Any]:
    """A client for arranging keys through the real API (CreateKeyRing, CreateCryptoKey)."""
    created = raw_client(server)
    created.create_key_ring(parent=RING.rsplit("/keyRings/", 1)[0], key_ring_id="ring", key_ring={})
    yield created
    created.transport.close()


def create_key(client: Any) -> str:
    """A fresh ENCRYPT_DECRYPT key, with version 1 as primary."""
    purpose = kms.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT
    key = client.create_crypto_key(
        parent=RING,
        crypto_key_id=f"key-{uuid.uuid4().hex[:12]}",
        crypto_key={"purpose": purpose},
    )
    return str(key.name)


@pytest.fixture
async def backend(server: GcpKmsServer) -> AsyncIterator[GcpKmsBackend]:
    """A backend built from settings, as the daemon builds it."""
    gcp = GcpKmsBackend(GcpKmsSettings(endpoint=server.endpoint, timeout=2.0))
    yield gcp
    await gcp.close()


@pytest.fixture
def key_id(client: Any) -> str:
    """A fresh key."""
    return create_key(client)


@pytest.fixture
def other_key_id(client: Any) -> str:
    """Another fresh key in the same key ring."""
    return create_key(client)


@pytest.fixture
def missing_key_id() -> str:
    """A well-formed name the server does not know."""
    return f"{RING}/cryptoKeys/missing-{uuid.uuid4().hex[:12]}"


class TestGcpKmsBackendContract(KmsBackendContract):
    """Cloud KMS binds the context as AAD and refuses disabled versions."""


class TestGcpKmsBackend:
    """Checksums, error mapping, rotation details and client ownership."""

    async def test_context_is_sorted_json_aad(
        self, backend: GcpKmsBackend, key_id: str, server: GcpKmsServer
    ) -> None:
        """Any Cloud KMS client can open a wrapped DEK with the documented AAD encoding."""
        wrapped = await backend.wrap(key_id, b"d" * 32, {"b": "2", "a": "1"})
        aad = b'{"a":"1","b":"2"}'
        assert context_aad({"b": "2", "a": "1"}) == aad
        assert context_aad({}) == b""
        request = {"name": key_id, "ciphertext": wrapped.wrapped}
        response = raw_client(server).decrypt(
            request={**request, "additional_authenticated_data": aad}
        )
        assert response.plaintext == b"d" * 32

    async def test_requests_carry_checksums(
        self, backend: GcpKmsBackend, key_id: str, server: GcpKmsServer
    ) -> None:
        """The server verified both request checksums (or the wrap would have failed)."""
        seen: list[Any] = []
        original = server.servicer.encrypt

        def spy(request: Any) -> Any:
            seen.append(request)
            return original(request)

        server.servicer.encrypt = spy  # type: ignore[method-assign]
        await backend.wrap(key_id, b"d" * 32, CONTEXT)
        (request,) = seen
        assert request.plaintext_crc32c == google_crc32c.value(b"d" * 32)
        aad = json.dumps(CONTEXT, sort_keys=True, separators=(",", ":")).encode()
        assert request.additional_authenticated_data_crc32c == google_crc32c.value(aad)

    @pytest.mark.parametrize("operation", ["wrap", "unwrap"])
    async def test_corrupted_response_fails_integrity_check(
        self, backend: GcpKmsBackend, key_id: str, server: GcpKmsServer, operation: str
    ) -> None:
        """A response whose checksum does not match is a retryable failure, not data."""
        wrapped = await backend.wrap(key_id, b"d" * 32, CONTEXT)
        server.corrupt_checksums = True
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "wrap": lambda: backend.wrap(key_id, b"d" * 32, CONTEXT),
            "unwrap": lambda: backend.unwrap(key_id, wrapped.key_version, wrapped.wrapped, CONTEXT),
        }
        with pytest.raises(KmsUnavailableError, match="integrity"):
            await calls[operation]()

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            (grpc.StatusCode.UNAVAILABLE, (KmsUnavailableError, KmsUnavailableError)),
            (grpc.StatusCode.DEADLINE_EXCEEDED, (KmsUnavailableError, KmsUnavailableError)),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, (KmsUnavailableError, KmsUnavailableError)),
            (grpc.StatusCode.INTERNAL, (KmsUnavailableError, KmsUnavailableError)),
            (grpc.StatusCode.PERMISSION_DENIED, (KmsAuthenticationError, KmsAuthenticationError)),
            (grpc.StatusCode.UNAUTHENTICATED, (KmsAuthenticationError, KmsAuthenticationError)),
            (grpc.StatusCode.NOT_FOUND, (KmsKeyNotFoundError, KmsKeyNotFoundError)),
            (grpc.StatusCode.FAILED_PRECONDITION, (KeyStateError, KeyStateError)),
            (grpc.StatusCode.INVALID_ARGUMENT, (KmsError, KmsInvalidCiphertextError)),
        ],
    )
    async def test_status_codes_map_to_broker_errors(
        self,
        backend: GcpKmsBackend,
        key_id: str,
        server: GcpKmsServer,
        code: grpc.StatusCode,
        expected: tuple[type[Exception], type[Exception]],
    ) -> None:
        """Each status maps to one broker error (wrap, unwrap); the server's text stays out."""
        wrapped = await backend.wrap(key_id, b"d" * 32, CONTEXT)
        server.fail_with(code)
        calls = (
            backend.wrap(key_id, b"d" * 32, CONTEXT),
            backend.unwrap(key_id, wrapped.key_version, wrapped.wrapped, CONTEXT),
        )
        for call, error in zip(calls, expected, strict=True):
            with pytest.raises(error) as caught:
                await call
            assert type(caught.value) is error
            assert "injected" not in str(caught.value)
            assert "injected" in str(caught.value.__cause__)

    async def test_disabled_primary_refuses_to_wrap(
        self, backend: GcpKmsBackend, key_id: str
    ) -> None:
        """Cloud KMS refuses to encrypt under a disabled primary version."""
        await backend.set_version_state(key_id, 1, enabled=False)
        with pytest.raises(KeyStateError):
            await backend.wrap(key_id, b"d" * 32, {})

    async def test_rotation_waits_for_pending_generation(
        self, backend: GcpKmsBackend, key_id: str, server: GcpKmsServer
    ) -> None:
        """A new version still being generated is polled until enabled, then made primary."""
        server.pending_reads = 2
        rotated = await backend.rotate_key(key_id)
        assert rotated.current_version == 2
        assert server.calls["GetCryptoKeyVersion"] == 2
        assert (await backend.wrap(key_id, b"d" * 32, {})).key_version == 2

    async def test_describe_reads_every_page_of_versions(
        self, backend: GcpKmsBackend, key_id: str, server: GcpKmsServer
    ) -> None:
        """Versions listed over several pages are all reported, in order."""
        for _ in range(4):
            await backend.rotate_key(key_id)
        server.calls.clear()
        described = await backend.describe_key(key_id)
        assert [v.version for v in described.versions] == [1, 2, 3, 4, 5]
        assert described.current_version == 5
        assert server.calls["ListCryptoKeyVersions"] == 3

    @pytest.mark.parametrize(
        "bad_id",
        ["", "key", "projects/p/cryptoKeys/k", f"{RING}/cryptoKeys/k/cryptoKeyVersions/1"],
    )
    async def test_malformed_key_id_is_not_found_without_a_call(
        self, backend: GcpKmsBackend, server: GcpKmsServer, bad_id: str
    ) -> None:
        """A key id that is not a CryptoKey name never reaches the KMS."""
        with pytest.raises(KmsKeyNotFoundError):
            await backend.describe_key(bad_id)
        assert sum(server.calls.values()) == 0

    async def test_injected_client_is_used_and_not_closed(
        self, server: GcpKmsServer, key_id: str
    ) -> None:
        """A caller-supplied client serves the backend and stays open after close()."""
        client = raw_client(server)
        gcp = GcpKmsBackend(GcpKmsSettings(), client=client)
        generated = await gcp.generate_data_key(key_id, CONTEXT)
        await gcp.close()
        response = client.decrypt(
            request={
                "name": key_id,
                "ciphertext": generated.wrapped,
                "additional_authenticated_data": context_aad(CONTEXT),
            }
        )
        assert response.plaintext == bytes(generated.plaintext)
        client.transport.close()

    async def test_health_before_any_key_is_used_checks_the_channel(
        self, server: GcpKmsServer
    ) -> None:
        """With no key known yet, health waits for the channel to connect."""
        server.stop()
        gcp = GcpKmsBackend(GcpKmsSettings(endpoint=server.endpoint, timeout=0.3))
        try:
            with pytest.raises(KmsUnavailableError):
                await gcp.health()
            server.start()
            # the channel reconnects after gRPC's backoff (about 1 s), not at once
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                try:
                    await gcp.health()
                    break
                except KmsUnavailableError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await gcp.close()


class TestResilienceAgainstGcp:
    """The resilience layer around the real client when the KMS dies and comes back."""

    async def test_dead_kms_opens_the_breaker_and_recovery_closes_it(
        self, server: GcpKmsServer, key_id: str
    ) -> None:
        """Stopped: KmsUnavailableError fast, then the circuit opens; restarted: it recovers."""
        settings = ResilienceSettings(timeout=1.0, breaker_failures=3, breaker_reset_seconds=0.3)
        inner = GcpKmsBackend(GcpKmsSettings(endpoint=server.endpoint, timeout=1.0))
        backend = ResilientBackend(inner, settings)
        try:
            before = await backend.generate_data_key(key_id, CONTEXT)
            server.stop()
            started = time.monotonic()
            with pytest.raises(KmsUnavailableError):
                await backend.wrap(key_id, b"d" * 32, CONTEXT)
            assert time.monotonic() - started < settings.timeout
            with pytest.raises(KmsUnavailableError):
                await backend.wrap(key_id, b"d" * 32, CONTEXT)
            assert str(backend.state) == "open"
            with pytest.raises(KmsUnavailableError, match="circuit open"):
                await backend.describe_key(key_id)
            server.start()
            await asyncio.sleep(settings.breaker_reset_seconds)
            opened = await backend.unwrap(key_id, before.key_version, before.wrapped, CONTEXT)
            assert opened == before.plaintext
            assert backend.state == "closed"
            assert backend.counters.rejected_open >= 1
        finally:
            await backend.close()

    async def test_hanging_kms_is_cut_off_at_the_timeout(
        self, server: GcpKmsServer, key_id: str
    ) -> None:
        """A KMS that accepts the call but never answers costs the caller the timeout only."""
        inner = GcpKmsBackend(GcpKmsSettings(endpoint=server.endpoint, timeout=5.0))
        backend = ResilientBackend(inner, ResilienceSettings(timeout=0.5))
        try:
            await backend.describe_key(key_id)
            server.suspend()
            started = time.monotonic()
            with pytest.raises(KmsUnavailableError, match="timed out"):
                await backend.wrap(key_id, b"d" * 32, CONTEXT)
            assert time.monotonic() - started < 1.0
            server.resume()
            assert (await backend.wrap(key_id, b"d" * 32, CONTEXT)).key_version == 1
        finally:
            server.resume()
            await backend.close()


class TestGcpKmsSettings:
    """Settings validation and client construction without any network."""

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"timeout": 0}, "timeout"),
            ({"max_workers": 0}, "max_workers"),
            ({"endpoint": "no-port"}, "endpoint"),
        ],
    )
    def test_invalid_settings(self, kwargs: dict[str, Any], field: str) -> None:
        """Each impossible value is refused with the field's name."""
        with pytest.raises(ConfigError, match=field):
            GcpKmsSettings(**kwargs)

    def test_unreadable_credentials_file(self, tmp_path: Path) -> None:
        """A credentials file that is not one is a configuration error naming the field."""
        bogus = tmp_path / "creds.json"
        bogus.write_text("{}")
        with pytest.raises(ConfigError, match="credentials_file"):
            GcpKmsBackend(GcpKmsSettings(credentials_file=str(bogus)))

    def test_no_credentials_anywhere(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a credentials file or usable ADC, construction fails naming the field."""
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
        with pytest.raises(ConfigError, match="credentials_file"):
            GcpKmsBackend(GcpKmsSettings(endpoint="kms.example.test:443"))

    async def test_service_account_file_builds_a_tls_client(self, tmp_path: Path) -> None:
        """A service-account key file and a remote endpoint give a client, without connecting."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        account = {
            "type": "service_account",
            "project_id": "keybroker-test",
            "private_key_id": "0" * 40,
            "private_key": pem,
            "client_email": "broker@keybroker-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
        path = tmp_path / "sa.json"
        path.write_text(json.dumps(account))
        settings = GcpKmsSettings(credentials_file=str(path), endpoint="kms.example.test:443")
        gcp = GcpKmsBackend(settings)
        try:
            assert gcp._client.transport._host == "kms.example.test:443"
        finally:
            await gcp.close()
