"""AWS KMS backend (`aws-kms://ARN-or-key-id-or-alias/NAME`): KMS wraps DEKs under a KMS key.

The caller's encryption context becomes the KMS `EncryptionContext`, so KMS itself refuses
to unwrap a DEK under any other context. KMS keeps the versions of a key's material behind
one key id and every ciphertext names its own material, so key versions are always 0 here;
`rotate_key` asks for on-demand rotation and old wrapped DEKs keep unwrapping.

Asymmetric KMS keys sign for `purpose = "signing"` keys (broker/kms/aws/signing.py).

boto3 is imported on first construction; every SDK call runs on a thread pool owned by the
backend, sized like the HTTP connection pool, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from broker.errors import (
    BrokerError,
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
    WrongKeyPurposeError,
)
from broker.kms.aws._sdk import sdk
from broker.kms.aws.signing import AwsSigning, signing_algorithm
from broker.kms.base import BackendKey, GeneratedKey, KeyVersionInfo, WrappedKey

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.kms.aws.settings import AwsKmsSettings
    from broker.kms.base import PublicKeyInfo, SignResult, VersionState

__all__ = ["AwsKmsBackend"]

# Error codes of KMS and of the AWS request layer, grouped by what the broker does about them.
_NOT_FOUND_CODES = frozenset({"NotFoundException"})
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "AuthFailure",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "DependencyTimeoutException",
        "InternalFailure",
        "KMSInternalException",
        "KeyUnavailableException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Throttling",
        "ThrottlingException",
    }
)
_KEY_STATE_CODES = frozenset({"DisabledException", "KMSInvalidStateException"})
_QUOTA_CODES = frozenset({"LimitExceededException"})
_BAD_CIPHERTEXT_CODES = frozenset({"IncorrectKeyException", "InvalidCiphertextException"})
_WRONG_PURPOSE_CODES = frozenset({"InvalidKeyUsageException", "UnsupportedOperationException"})
# botocore exception class names (matched on the class hierarchy, so botocore stays lazy).
_CREDENTIAL_ERRORS = frozenset(
    {
        "CredentialRetrievalError",
        "NoCredentialsError",
        "PartialCredentialsError",
        "SSOTokenLoadError",
        "TokenRetrievalError",
        "UnauthorizedSSOTokenError",
    }
)
_TRANSPORT_ERRORS = frozenset({"HTTPClientError", "ConnectionError", "TimeoutError"})


def _make_client(settings: AwsKmsSettings) -> Any:  # noqa: ANN401 - boto3 clients are untyped here
    """Build one KMS client whose connection pool every call of the backend shares."""
    boto3 = sdk().boto3
    botocore_config = sdk().botocore_config
    config = botocore_config.Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.max_pool_connections,
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
    )
    try:
        session = boto3.session.Session(
            profile_name=settings.profile,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            aws_session_token=settings.session_token,
        )
        return session.client(
            "kms",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=config,
        )
    except Exception as exc:
        raise _config_error(exc) from exc


def _config_error(exc: Exception) -> ConfigError:
    """Say which setting to fix when the SDK cannot even build a client."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "ProfileNotFound" in names:
        return ConfigError("backends.aws.profile names no profile in the AWS config files")
    if "NoRegionError" in names:
        return ConfigError("backends.aws.region is required (no region in the env or profile)")
    return ConfigError("backends.aws: the AWS SDK rejected the settings")


def _map_error(exc: Exception) -> BrokerError:
    """Translate an SDK failure into the broker's KMS errors, keeping SDK text out of them."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return _map_code(code, status)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _CREDENTIAL_ERRORS:
        return KmsAuthenticationError()
    if names & _TRANSPORT_ERRORS:
        return KmsUnavailableError()
    return KmsError()


def _map_code(code: str, status: int) -> BrokerError:  # noqa: PLR0911 - one branch per class
    """Map a KMS error code (or, failing that, the HTTP status) to a broker error."""
    if code in _NOT_FOUND_CODES:
        return KmsKeyNotFoundError()
    if code in _BAD_CIPHERTEXT_CODES:
        return KmsInvalidCiphertextError()
    if code in _KEY_STATE_CODES:
        return KeyStateError("the KMS key is disabled or pending deletion")
    if code in _WRONG_PURPOSE_CODES:
        return WrongKeyPurposeError("the KMS key does not support symmetric encryption")
    if code in _QUOTA_CODES:
        return KeyStateError("the KMS refused the operation: a quota on this key is used up")
    if code in _AUTH_CODES or status in {401, 403}:
        return KmsAuthenticationError()
    if code in _UNAVAILABLE_CODES or status == 429 or status >= 500:  # noqa: PLR2004 - HTTP codes
        return KmsUnavailableError()
    return KmsError()


def _context_param(context: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """KMS rejects an empty EncryptionContext map on some paths, so send none instead."""
    return {"EncryptionContext": dict(context)} if context else {}


def _version_info(metadata: Mapping[str, Any]) -> KeyVersionInfo:
    """The single, KMS-managed version 0 of a key, enabled only while the key is `Enabled`."""
    state: VersionState = "enabled" if metadata.get("KeyState") == "Enabled" else "disabled"
    return KeyVersionInfo(version=0, state=state, created=metadata.get("CreationDate"))


def _backend_key(key_id: str, metadata: Mapping[str, Any]) -> BackendKey:
    """Describe a key from its DescribeKey metadata; only symmetric KMS-made keys rotate."""
    spec = str(metadata.get("KeySpec", "SYMMETRIC_DEFAULT"))
    symmetric = spec == "SYMMETRIC_DEFAULT"
    return BackendKey(
        key_id=key_id,
        current_version=0,
        versions=(_version_info(metadata),),
        algorithm="aes-256-gcm" if symmetric else signing_algorithm(spec) or spec.lower(),
        rotatable=symmetric and metadata.get("Origin", "AWS_KMS") == "AWS_KMS",
    )


class AwsKmsBackend:
    """`KmsBackend` over AWS KMS symmetric keys, `SigningBackend` over asymmetric ones."""

    scheme = "aws-kms"

    def __init__(self, settings: AwsKmsSettings, *, client: Any | None = None) -> None:  # noqa: ANN401 - boto3 client
        """Use `client` (a boto3 KMS client) when given, else build one from `settings`."""
        self._settings = settings
        self._owns_client = client is None
        self._client: Any = _make_client(settings) if client is None else client
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_pool_connections, thread_name_prefix="kms-aws"
        )
        # Calls that can run at once; the resilience layer queues the rest outside the breaker.
        self.max_concurrency: int | None = settings.max_pool_connections
        self._closed = False
        self._signing = AwsSigning(self._call)

    def __repr__(self) -> str:
        """Show the settings (secrets hidden by their own repr), never the client."""
        return f"AwsKmsBackend({self._settings!r})"

    async def _call(self, operation: str, /, **params: Any) -> dict[str, Any]:  # noqa: ANN401 - SDK params
        """Run one KMS API call on the backend's threads and translate its errors."""
        if self._closed:
            raise KmsUnavailableError("key management backend is closed")
        method = functools.partial(getattr(self._client, operation), **params)
        loop = asyncio.get_running_loop()
        try:
            result: dict[str, Any] = await loop.run_in_executor(self._executor, method)
        except Exception as exc:
            raise _map_error(exc) from exc
        return result

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """Let KMS create the DEK, so its plaintext and wrapped form come from one call."""
        response = await self._call(
            "generate_data_key", KeyId=key_id, KeySpec="AES_256", **_context_param(context)
        )
        return GeneratedKey(
            plaintext=bytearray(response["Plaintext"]),
            wrapped=bytes(response["CiphertextBlob"]),
            key_version=0,
        )

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Encrypt a caller-supplied DEK with KMS, binding the encryption context."""
        response = await self._call(
            "encrypt", KeyId=key_id, Plaintext=bytes(dek), **_context_param(context)
        )
        return WrappedKey(wrapped=bytes(response["CiphertextBlob"]), key_version=0)

    async def unwrap(
        self,
        key_id: str,
        key_version: int,  # noqa: ARG002 - the KMS ciphertext names its own key material
        wrapped: bytes,
        context: Mapping[str, str],
    ) -> bytearray:
        """Decrypt a wrapped DEK; naming KeyId makes KMS refuse blobs of any other key."""
        response = await self._call(
            "decrypt", KeyId=key_id, CiphertextBlob=bytes(wrapped), **_context_param(context)
        )
        return bytearray(response["Plaintext"])

    async def _metadata(self, key_id: str) -> dict[str, Any]:
        """DescribeKey, which also resolves an alias to the key id other APIs insist on."""
        response = await self._call("describe_key", KeyId=key_id)
        metadata: dict[str, Any] = response["KeyMetadata"]
        return metadata

    async def describe_key(self, key_id: str) -> BackendKey:
        """Report the key's state as its one version; KMS hides the versions of its material."""
        return _backend_key(key_id, await self._metadata(key_id))

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Ask KMS for on-demand rotation; new wraps use new material, old ones keep unwrapping."""
        metadata = await self._metadata(key_id)
        key = _backend_key(key_id, metadata)
        if not key.rotatable:
            raise KeyStateError("only symmetric KMS keys with KMS-generated material can rotate")
        await self._call("rotate_key_on_demand", KeyId=metadata["KeyId"])
        return key

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Enable or disable the whole KMS key: its only version is 0."""
        if version != 0:
            raise KmsKeyNotFoundError("key version not found: AWS KMS keys have only version 0")
        metadata = await self._metadata(key_id)
        await self._call("enable_key" if enabled else "disable_key", KeyId=metadata["KeyId"])
        return _version_info(await self._metadata(key_id))

    async def public_key(self, key_id: str, key_version: int) -> PublicKeyInfo:
        """GetPublicKey of an asymmetric key, cached (signing.py)."""
        return await self._signing.public_key(key_id, key_version)

    async def sign(self, key_id: str, message: bytes, *, prehashed: bool) -> SignResult:
        """KMS Sign with the algorithm of the key's spec (signing.py)."""
        return await self._signing.sign(key_id, message, prehashed=prehashed)

    async def verify(
        self, key_id: str, key_version: int, message: bytes, signature: bytes, *, prehashed: bool
    ) -> int:
        """Check a signature with the key's cached public key (signing.py)."""
        return await self._signing.verify(
            key_id, key_version, message, signature, prehashed=prehashed
        )

    async def health(self) -> None:
        """The cheapest authenticated call KMS offers: list at most one key."""
        await self._call("list_keys", Limit=1)

    async def close(self) -> None:
        """Stop the worker threads and, if the backend built it, the client's connection pool."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            await asyncio.to_thread(self._client.close)
