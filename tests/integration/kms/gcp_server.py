"""An in-test Cloud KMS: our own google.cloud.kms.v1.KeyManagementService over real gRPC.

It is a test double written for keybroker, not Google's server. It speaks the real gRPC
service (the message classes of the installed google-cloud-kms package), so the real
`KeyManagementServiceClient` talks to it over a real channel on 127.0.0.1. It implements the
RPCs keybroker uses: Encrypt, Decrypt, GetCryptoKey, GetCryptoKeyVersion,
ListCryptoKeyVersions (paged, at most `page_size_limit` per page), CreateCryptoKeyVersion,
UpdateCryptoKeyPrimaryVersion, UpdateCryptoKeyVersion, CreateKeyRing and CreateCryptoKey.

Each key version holds its own AES-256-GCM key. A ciphertext is
`u32 version ‖ nonce(12) ‖ AES-GCM(plaintext)` with `u16 len(key name) ‖ key name ‖ AAD` as
GCM associated data, so it names its version and only opens under the same key and AAD.
CRC32C fields are checked and filled in as the real service documents. Switches for tests:
`fail_with(code)` fails every call, `corrupt_checksums` falsifies response checksums,
`pending_reads` leaves new versions PENDING_GENERATION for that many reads,
`suspend()`/`resume()` make calls hang (keeping state), and `stop()`/`start()`/`restart()`
take the server down and back up on the same port, keys kept.

    with GcpKmsServer() as server:
        key_id = server.create_key("projects/p/locations/global/keyRings/r/cryptoKeys/k")
        backend = GcpKmsBackend(GcpKmsSettings(endpoint=server.endpoint))
"""

from __future__ import annotations

import os
import struct
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, Self

import google_crc32c
import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["GcpKmsServer"]

SERVICE = "google.cloud.kms.v1.KeyManagementService"
_State = kms.CryptoKeyVersion.CryptoKeyVersionState
_Purpose = kms.CryptoKey.CryptoKeyPurpose
_Algorithm = kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm
_MAX_DATA = 64 * 1024
_HEADER = struct.Struct(">I")
_NONCE = 12


class _AbortError(Exception):
    """Ends an RPC with a status code."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        """Carry the status code the client will see."""
        super().__init__(detail)
        self.code = code


def _abort(code: grpc.StatusCode, detail: str) -> NoReturn:
    raise _AbortError(code, detail)


def _crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


@dataclass
class _Version:
    number: int
    material: bytes
    state: Any = _State.ENABLED
    pending_reads: int = 0
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class _Key:
    name: str
    purpose: Any
    versions: dict[int, _Version] = field(default_factory=dict)
    primary: int | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


class _Servicer:
    """The RPC implementations over in-memory key rings and keys."""

    def __init__(self) -> None:
        """Start with no key rings, serving normally."""
        self.lock = threading.Lock()
        self.key_rings: dict[str, datetime] = {}
        self.keys: dict[str, _Key] = {}
        self.failure: grpc.StatusCode | None = None
        self.corrupt_checksums = False
        self.pending_reads = 0
        self.page_size_limit = 2
        self.calls: Counter[str] = Counter()

    # -- helpers ---------------------------------------------------------------

    def _key(self, name: str) -> _Key:
        key = self.keys.get(name)
        if key is None:
            _abort(grpc.StatusCode.NOT_FOUND, f"{name} not found.")
        return key

    def _version(self, name: str) -> tuple[_Key, _Version]:
        key_name, sep, number = name.rpartition("/cryptoKeyVersions/")
        key = self._key(key_name if sep else name)
        if not number.isdigit() or int(number) not in key.versions:
            _abort(grpc.StatusCode.NOT_FOUND, f"{name} not found.")
        return key, key.versions[int(number)]

    def _version_message(self, key: _Key, version: _Version) -> Any:
        return kms.CryptoKeyVersion(
            name=f"{key.name}/cryptoKeyVersions/{version.number}",
            state=version.state,
            algorithm=_Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            protection_level=kms.ProtectionLevel.SOFTWARE,
            create_time=version.created,
        )

    def _key_message(self, key: _Key) -> Any:
        message = kms.CryptoKey(
            name=key.name,
            purpose=key.purpose,
            create_time=key.created,
            version_template=kms.CryptoKeyVersionTemplate(
                algorithm=_Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
                protection_level=kms.ProtectionLevel.SOFTWARE,
            ),
        )
        if key.primary is not None:
            message.primary = self._version_message(key, key.versions[key.primary])
        return message

    def _new_version(self, key: _Key) -> _Version:
        number = max(key.versions, default=0) + 1
        version = _Version(number=number, material=AESGCM.generate_key(256))
        if self.pending_reads:
            version.state = _State.PENDING_GENERATION
            version.pending_reads = self.pending_reads
        key.versions[number] = version
        return version

    @staticmethod
    def _check_crc(data: bytes, crc: int | None, field_name: str) -> None:
        if crc is not None and crc != _crc(data):
            _abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The checksum in field {field_name}_crc32c did not match the data in field "
                f"{field_name}.",
            )

    @staticmethod
    def _gcm_aad(key_name: str, aad: bytes) -> bytes:
        name = key_name.encode()
        return struct.pack(">H", len(name)) + name + aad

    # -- RPCs ------------------------------------------------------------------

    def encrypt(self, request: Any) -> Any:
        key, version = self._encrypt_version(str(request.name))
        plaintext = bytes(request.plaintext)
        aad = bytes(request.additional_authenticated_data)
        if not plaintext or len(plaintext) > _MAX_DATA or len(aad) > _MAX_DATA:
            _abort(grpc.StatusCode.INVALID_ARGUMENT, "plaintext or AAD size out of range.")
        self._check_crc(plaintext, request.plaintext_crc32c, "plaintext")
        self._check_crc(
            aad, request.additional_authenticated_data_crc32c, "additional_authenticated_data"
        )
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(version.material).encrypt(nonce, plaintext, self._gcm_aad(key.name, aad))
        ciphertext = _HEADER.pack(version.number) + nonce + sealed
        return kms.EncryptResponse(
            name=f"{key.name}/cryptoKeyVersions/{version.number}",
            ciphertext=ciphertext,
            ciphertext_crc32c=_crc(ciphertext) + (1 if self.corrupt_checksums else 0),
            verified_plaintext_crc32c="plaintext_crc32c" in request,
            verified_additional_authenticated_data_crc32c=(
                "additional_authenticated_data_crc32c" in request
            ),
            protection_level=kms.ProtectionLevel.SOFTWARE,
        )

    def _encrypt_version(self, name: str) -> tuple[_Key, _Version]:
        if "/cryptoKeyVersions/" in name:
            key, version = self._version(name)
        else:
            key = self._key(name)
            if key.primary is None:
                _abort(grpc.StatusCode.FAILED_PRECONDITION, f"{name} has no primary version.")
            version = key.versions[key.primary]
        if key.purpose != _Purpose.ENCRYPT_DECRYPT:
            _abort(grpc.StatusCode.FAILED_PRECONDITION, f"{name} is not an ENCRYPT_DECRYPT key.")
        if version.state != _State.ENABLED:
            _abort(grpc.StatusCode.FAILED_PRECONDITION, f"{name} version is not enabled.")
        return key, version

    def decrypt(self, request: Any) -> Any:
        key = self._key(str(request.name))
        ciphertext = bytes(request.ciphertext)
        aad = bytes(request.additional_authenticated_data)
        self._check_crc(ciphertext, request.ciphertext_crc32c, "ciphertext")
        self._check_crc(
            aad, request.additional_authenticated_data_crc32c, "additional_authenticated_data"
        )
        invalid = "Decryption failed: the ciphertext is invalid."
        if len(ciphertext) < _HEADER.size + _NONCE + 16:
            _abort(grpc.StatusCode.INVALID_ARGUMENT, invalid)
        (number,) = _HEADER.unpack_from(ciphertext)
        version = key.versions.get(number)
        if version is None:
            _abort(grpc.StatusCode.INVALID_ARGUMENT, invalid)
        if version.state != _State.ENABLED:
            _abort(grpc.StatusCode.FAILED_PRECONDITION, "The key version is not enabled.")
        nonce = ciphertext[_HEADER.size : _HEADER.size + _NONCE]
        try:
            plaintext = AESGCM(version.material).decrypt(
                nonce, ciphertext[_HEADER.size + _NONCE :], self._gcm_aad(key.name, aad)
            )
        except InvalidTag:
            _abort(grpc.StatusCode.INVALID_ARGUMENT, invalid)
        return kms.DecryptResponse(
            plaintext=plaintext,
            plaintext_crc32c=_crc(plaintext) + (1 if self.corrupt_checksums else 0),
            used_primary=number == key.primary,
            protection_level=kms.ProtectionLevel.SOFTWARE,
        )

    def get_crypto_key(self, request: Any) -> Any:
        return self._key_message(self._key(str(request.name)))

    def get_crypto_key_version(self, request: Any) -> Any:
        key, version = self._version(str(request.name))
        if version.pending_reads:
            version.pending_reads -= 1
            if not version.pending_reads:
                version.state = _State.ENABLED
        return self._version_message(key, version)

    def list_crypto_key_versions(self, request: Any) -> Any:
        key = self._key(str(request.parent))
        versions = [key.versions[n] for n in sorted(key.versions)]
        start = int(request.page_token or 0)
        size = min(request.page_size or self.page_size_limit, self.page_size_limit)
        page = versions[start : start + size]
        more = start + size < len(versions)
        return kms.ListCryptoKeyVersionsResponse(
            crypto_key_versions=[self._version_message(key, v) for v in page],
            next_page_token=str(start + size) if more else "",
            total_size=len(versions),
        )

    def create_crypto_key_version(self, request: Any) -> Any:
        key = self._key(str(request.parent))
        return self._version_message(key, self._new_version(key))

    def update_crypto_key_primary_version(self, request: Any) -> Any:
        key = self._key(str(request.name))
        _, version = self._version(f"{key.name}/cryptoKeyVersions/{request.crypto_key_version_id}")
        if version.state != _State.ENABLED:
            _abort(grpc.StatusCode.FAILED_PRECONDITION, "The version must be ENABLED.")
        key.primary = version.number
        return self._key_message(key)

    def update_crypto_key_version(self, request: Any) -> Any:
        wanted = request.crypto_key_version
        key, version = self._version(str(wanted.name))
        if list(request.update_mask.paths) != ["state"]:
            _abort(grpc.StatusCode.INVALID_ARGUMENT, "Only the state field can be updated.")
        if wanted.state not in (_State.ENABLED, _State.DISABLED):
            _abort(grpc.StatusCode.INVALID_ARGUMENT, "State must be ENABLED or DISABLED.")
        if version.state not in (_State.ENABLED, _State.DISABLED):
            _abort(grpc.StatusCode.FAILED_PRECONDITION, "The version cannot change state now.")
        version.state = wanted.state
        return self._version_message(key, version)

    def create_key_ring(self, request: Any) -> Any:
        name = f"{request.parent}/keyRings/{request.key_ring_id}"
        if name in self.key_rings:
            _abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists.")
        self.key_rings[name] = datetime.now(UTC)
        return kms.KeyRing(name=name, create_time=self.key_rings[name])

    def create_crypto_key(self, request: Any) -> Any:
        if request.parent not in self.key_rings:
            _abort(grpc.StatusCode.NOT_FOUND, f"{request.parent} not found.")
        name = f"{request.parent}/cryptoKeys/{request.crypto_key_id}"
        if name in self.keys:
            _abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists.")
        key = _Key(name=name, purpose=request.crypto_key.purpose or _Purpose.ENCRYPT_DECRYPT)
        self.keys[name] = key
        if key.purpose == _Purpose.ENCRYPT_DECRYPT and not request.skip_initial_version_creation:
            key.primary = self._new_version(key).number
        return self._key_message(key)


_RPCS: dict[str, tuple[str, Any, Any]] = {
    "Encrypt": ("encrypt", kms.EncryptRequest, kms.EncryptResponse),
    "Decrypt": ("decrypt", kms.DecryptRequest, kms.DecryptResponse),
    "GetCryptoKey": ("get_crypto_key", kms.GetCryptoKeyRequest, kms.CryptoKey),
    "GetCryptoKeyVersion": (
        "get_crypto_key_version",
        kms.GetCryptoKeyVersionRequest,
        kms.CryptoKeyVersion,
    ),
    "ListCryptoKeyVersions": (
        "list_crypto_key_versions",
        kms.ListCryptoKeyVersionsRequest,
        kms.ListCryptoKeyVersionsResponse,
    ),
    "CreateCryptoKeyVersion": (
        "create_crypto_key_version",
        kms.CreateCryptoKeyVersionRequest,
        kms.CryptoKeyVersion,
    ),
    "UpdateCryptoKeyPrimaryVersion": (
        "update_crypto_key_primary_version",
        kms.UpdateCryptoKeyPrimaryVersionRequest,
        kms.CryptoKey,
    ),
    "UpdateCryptoKeyVersion": (
        "update_crypto_key_version",
        kms.UpdateCryptoKeyVersionRequest,
        kms.CryptoKeyVersion,
    ),
    "CreateKeyRing": ("create_key_ring", kms.CreateKeyRingRequest, kms.KeyRing),
    "CreateCryptoKey": ("create_crypto_key", kms.CreateCryptoKeyRequest, kms.CryptoKey),
}


class GcpKmsServer:
    """Serves the test double on 127.0.0.1; stop() and start() keep the same port."""

    def __init__(self) -> None:
        """Prepare the server; start() listens on a free 127.0.0.1 port."""
        self.servicer = _Servicer()
        self.port = 0
        self._server: grpc.Server | None = None
        self._awake = threading.Event()
        self._awake.set()

    def __enter__(self) -> Self:
        """Start serving."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is listening (a suspended one counts as running)."""
        return self._server is not None

    @property
    def endpoint(self) -> str:
        """HOST:PORT for GcpKmsSettings.endpoint."""
        return f"127.0.0.1:{self.port}"

    @property
    def calls(self) -> Counter[str]:
        """How many times each RPC was called (including failed calls)."""
        return self.servicer.calls

    def fail_with(self, code: grpc.StatusCode | None) -> None:
        """Fail every RPC with `code` (None: serve normally again)."""
        self.servicer.failure = code

    @property
    def corrupt_checksums(self) -> bool:
        """Whether response checksums are falsified (to test integrity checks)."""
        return self.servicer.corrupt_checksums

    @corrupt_checksums.setter
    def corrupt_checksums(self, value: bool) -> None:
        self.servicer.corrupt_checksums = value

    @property
    def pending_reads(self) -> int:
        """New versions stay PENDING_GENERATION for this many GetCryptoKeyVersion reads."""
        return self.servicer.pending_reads

    @pending_reads.setter
    def pending_reads(self, value: int) -> None:
        self.servicer.pending_reads = value

    def start(self) -> Self:
        """Listen (again) on the port chosen at the first start."""
        if self._server is None:
            server = grpc.server(ThreadPoolExecutor(max_workers=8))
            server.add_generic_rpc_handlers((self._handler(),))
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
            server.start()
            self._server = server
        return self

    def stop(self) -> None:
        """Stop at once; in-flight calls fail and new connections are refused."""
        server, self._server = self._server, None
        self._awake.set()
        if server is not None:
            server.stop(grace=None).wait()

    def restart(self) -> Self:
        """Stop and start on the same port; keys survive."""
        self.stop()
        return self.start()

    def suspend(self) -> None:
        """Make every call hang until resume() or stop(), as a stalled KMS does."""
        self._awake.clear()

    def resume(self) -> None:
        """Answer calls again, including the ones that were hanging."""
        self._awake.set()

    def create_key(self, key_id: str) -> str:
        """Create key ring and key for `projects/P/locations/L/keyRings/R/cryptoKeys/K`."""
        ring, _, key = key_id.partition("/cryptoKeys/")
        with self.servicer.lock:
            self.servicer.key_rings.setdefault(ring, datetime.now(UTC))
            request = kms.CreateCryptoKeyRequest(
                parent=ring,
                crypto_key_id=key,
                crypto_key=kms.CryptoKey(purpose=_Purpose.ENCRYPT_DECRYPT),
            )
            self.servicer.create_crypto_key(request)
        return key_id

    def _handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                self._serve(method, name),
                request_deserializer=request_type.deserialize,
                response_serializer=response_type.serialize,
            )
            for method, (name, request_type, response_type) in _RPCS.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _serve(self, method: str, name: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        def serve(request: Any, context: grpc.ServicerContext) -> Any:
            servicer = self.servicer
            self._awake.wait()
            with servicer.lock:
                servicer.calls[method] += 1
                try:
                    if servicer.failure is not None:
                        _abort(servicer.failure, "injected failure")
                    return getattr(servicer, name)(request)
                except _AbortError as exc:
                    code, detail = exc.code, str(exc)
            return context.abort(code, detail)

        return serve
