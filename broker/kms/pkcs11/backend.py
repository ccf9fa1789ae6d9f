"""The PKCS#11 backend (`pkcs11://TOKEN/LABEL`): AES-256 keys that never leave an HSM.

The key id is `TOKEN/LABEL`; TOKEN must be the configured token. Version 1 of a key is the
AES-256 secret key object labelled `LABEL`; rotation adds `LABEL#v2`, `LABEL#v3`, … and the
highest existing version is the current one (versions are never deleted). A version is
enabled while its CKA_ENCRYPT and CKA_DECRYPT attributes are true.

A wrapped DEK is `0x01 ‖ iv(12) ‖ CKM_AES_GCM(key version, iv, DEK, aad) ‖ tag(16)`: the
HSM encrypts the DEK with a random IV drawn from its own RNG and
`aad = "keybroker/pkcs11/v1" ‖ u8 len(LABEL) ‖ LABEL ‖ u32 version ‖ canonical context`, so
a wrapped DEK opens only under the same key, version and encryption context.

Sessions come from a small pool; PKCS#11 login state belongs to the whole process, so the
token is logged in once and stays so while any backend uses it. Calls into one module are
serialised (see broker/kms/pkcs11/sessions.py, which holds the pool and the login registry).
"""

from __future__ import annotations

import asyncio
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from broker.core.context import canonical_context
from broker.errors import (
    ConfigError,
    KeyStateError,
    KmsAuthenticationError,
    KmsError,
    KmsInvalidCiphertextError,
    KmsKeyNotFoundError,
    KmsUnavailableError,
)
from broker.kms.base import BackendKey, GeneratedKey, KeyVersionInfo, WrappedKey
from broker.kms.pkcs11._sdk import sdk
from broker.kms.pkcs11.sessions import BROKEN_SESSION, SessionPool, is_error

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from broker.kms.pkcs11.settings import Pkcs11Settings

__all__ = ["Pkcs11Backend", "version_label"]

_T = TypeVar("_T")
# python-pkcs11 objects (lib, token, session, key) are untyped here: the SDK is imported lazily.
_Obj = Any
_FORMAT = 0x01
_IV = 12
_TAG = 16
_DEK_BYTES = 32
_AAD_PREFIX = b"keybroker/pkcs11/v1"
_VERSION_MARK = "#v"
_MAX_LABEL = 200


def version_label(label: str, version: int) -> str:
    """The object label of one key version: `LABEL` for 1, `LABEL#vN` after that."""
    return label if version == 1 else f"{label}{_VERSION_MARK}{version}"


def _aad(label: str, version: int, context: Mapping[str, str]) -> bytes:
    """Bind the key label, version and encryption context to the wrapped DEK."""
    name = label.encode()
    header = _AAD_PREFIX + struct.pack(">B", len(name)) + name + struct.pack(">I", version)
    return header + canonical_context(context)


def _is(exc: BaseException, names: str) -> bool:
    """Whether exc is one of the python-pkcs11 exception classes named (space-separated)."""
    return is_error(sdk().exceptions, exc, names)


# (python-pkcs11 exception class names, broker error); the first match wins.
_DECRYPT_ERRORS: tuple[tuple[str, type[Exception]], ...] = (
    (
        "NoSuchKey EncryptedDataInvalid EncryptedDataLenRange DataLenRange",
        KmsInvalidCiphertextError,
    ),
    # SoftHSM2 reports a failed GCM tag check as CKR_GENERAL_ERROR.
    ("GeneralError FunctionFailed", KmsInvalidCiphertextError),
)
_ERRORS: tuple[tuple[str, type[Exception]], ...] = (
    ("NoSuchKey", KmsKeyNotFoundError),
    ("PinIncorrect PinExpired PinLocked PinInvalid PinLenRange", KmsAuthenticationError),
    ("UserPinNotInitialized UserNotLoggedIn", KmsAuthenticationError),
    ("AttributeReadOnly", KeyStateError),
    (f"{BROKEN_SESSION} NoSuchToken TokenNotRecognised SessionCount", KmsUnavailableError),
    ("DeviceMemory HostMemory GeneralError FunctionCancelled", KmsUnavailableError),
)


def _map_error(exc: Exception, *, decrypting: bool) -> Exception:
    """Translate a python-pkcs11 error; its text stays in the chained cause, for the log."""
    for names, error in (_DECRYPT_ERRORS + _ERRORS) if decrypting else _ERRORS:
        if _is(exc, names):
            return error()
    return KmsError()


def _parse_key_id(key_id: str, token_label: str) -> str:
    """The LABEL of `TOKEN/LABEL`; another token's keys are not found here."""
    token, sep, label = key_id.partition("/")
    if not sep or token != token_label or "#" in label or not 0 < len(label.encode()) <= _MAX_LABEL:
        raise KmsKeyNotFoundError
    return label


def _load_lib(module: str) -> _Obj:
    """Load and initialise the PKCS#11 module (once per path and process)."""
    pkcs11 = sdk().pkcs11
    try:
        return pkcs11.lib(module)
    except Exception as exc:
        msg = f"backends.pkcs11.module {module!r} could not be loaded as a PKCS#11 module"
        raise ConfigError(msg) from exc


class Pkcs11Backend:
    """KmsBackend over one PKCS#11 token; each HSM call runs on a worker with its own session."""

    scheme = "pkcs11"

    def __init__(self, settings: Pkcs11Settings, *, lib: _Obj | None = None) -> None:
        """Use `lib` (a loaded `pkcs11.lib`) when given, else load settings.module."""
        self._settings = settings
        self._p11 = sdk().pkcs11
        self._gcm = sdk().mechanisms.GCMParams
        lib = lib if lib is not None else _load_lib(settings.module_path())
        errors = sdk().exceptions
        self._pool = SessionPool(lib, settings, settings.read_pin(), errors)
        self._executor = ThreadPoolExecutor(settings.pool_size, thread_name_prefix="pkcs11")
        # Every call holds the module lock, so one runs at a time whatever pool_size; the
        # resilience layer queues the rest outside the breaker.
        self.max_concurrency: int | None = 1
        self._current: dict[str, int] = {}
        self._rotate_lock = threading.Lock()

    async def _run(
        self, fn: Callable[..., _T], key_id: str, *args: object, decrypting: bool = False
    ) -> _T:
        """Run `fn(session, label, *args)` on a worker with a pooled session, mapping errors."""
        label = _parse_key_id(key_id, self._settings.token_label)

        def work() -> _T:
            with self._pool.module_lock, self._pool.session() as session:
                return fn(session, label, *args)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except (KmsError, KeyStateError):
            raise
        except Exception as exc:
            raise _map_error(exc, decrypting=decrypting) from exc

    def _find(self, session: _Obj, label: str) -> _Obj | None:
        """The AES secret key object with exactly this label, if any."""
        a, o = self._p11.Attribute, self._p11.ObjectClass
        template = {a.CLASS: o.SECRET_KEY, a.KEY_TYPE: self._p11.KeyType.AES, a.LABEL: label}
        found = list(session.get_objects(template))
        if len(found) > 1:
            raise KeyStateError("more than one key object carries this version's label")
        return found[0] if found else None

    def _version_key(self, session: _Obj, label: str, version: int, missing: Exception) -> _Obj:
        """One version's key object; `missing` when the key exists but that version does not."""
        key = self._find(session, version_label(label, version)) if version >= 1 else None
        if key is None:
            if self._find(session, label) is None:
                raise KmsKeyNotFoundError
            raise missing
        return key

    def _enabled(self, key: _Obj) -> bool:
        """A version serves while the HSM lets it both encrypt and decrypt."""
        a = self._p11.Attribute
        return bool(key[a.ENCRYPT]) and bool(key[a.DECRYPT])

    def _current_version(self, session: _Obj, label: str) -> int:
        """The highest version, probed upward from the last one seen (others may rotate too)."""
        version = self._current.get(label) or int(self._find(session, label) is not None)
        if version == 0:
            raise KmsKeyNotFoundError
        while self._find(session, version_label(label, version + 1)) is not None:
            version += 1
        self._current[label] = version
        return version

    def _create(self, session: _Obj, label: str, version: int) -> None:
        """Generate a non-extractable AES-256 token key for one version, inside the HSM."""
        p = self._p11
        session.generate_key(
            p.KeyType.AES,
            256,
            label=version_label(label, version),
            store=True,
            capabilities=p.MechanismFlag.ENCRYPT | p.MechanismFlag.DECRYPT,
            template={p.Attribute.SENSITIVE: True, p.Attribute.EXTRACTABLE: False},
        )

    def _gcm_args(self, iv: bytes, label: str, version: int, context: Mapping[str, str]) -> _Obj:
        """CKM_AES_GCM with the IV, the binding AAD and a 128-bit tag."""
        param = self._gcm(iv, _aad(label, version, context), _TAG * 8)
        return {"mechanism": self._p11.Mechanism.AES_GCM, "mechanism_param": param}

    def _seal(
        self, session: _Obj, label: str, dek: bytes, context: Mapping[str, str]
    ) -> WrappedKey:
        """Encrypt the DEK inside the HSM under the current version."""
        version = self._current_version(session, label)
        key = self._find(session, version_label(label, version))
        if key is None or not self._enabled(key):
            raise KeyStateError("current key version is disabled; rotate the key")
        iv = bytes(session.generate_random(_IV * 8))
        sealed = bytes(key.encrypt(dek, **self._gcm_args(iv, label, version, context)))
        return WrappedKey(wrapped=bytes([_FORMAT]) + iv + sealed, key_version=version)

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> GeneratedKey:
        """Draw the DEK from the HSM's RNG and wrap it in the same session."""
        return await self._run(self._generate, key_id, dict(context))

    def _generate(self, session: _Obj, label: str, context: Mapping[str, str]) -> GeneratedKey:
        dek = bytearray(session.generate_random(_DEK_BYTES * 8))
        wrapped = self._seal(session, label, bytes(dek), context)
        return GeneratedKey(plaintext=dek, wrapped=wrapped.wrapped, key_version=wrapped.key_version)

    async def wrap(self, key_id: str, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Wrap a caller's DEK under the current version."""
        return await self._run(self._seal, key_id, bytes(dek), dict(context))

    async def unwrap(
        self, key_id: str, key_version: int, wrapped: bytes, context: Mapping[str, str]
    ) -> bytearray:
        """Decrypt inside the HSM; any mismatch of key, version, context or bytes is invalid."""
        if len(wrapped) < 1 + _IV + _TAG or wrapped[0] != _FORMAT:
            _parse_key_id(key_id, self._settings.token_label)
            raise KmsInvalidCiphertextError
        args = (key_version, bytes(wrapped), dict(context))
        return await self._run(self._unwrap, key_id, *args, decrypting=True)

    def _unwrap(
        self,
        session: _Obj,
        label: str,
        version: int,
        wrapped: bytes,
        context: Mapping[str, str],
    ) -> bytearray:
        key = self._version_key(session, label, version, KmsInvalidCiphertextError())
        if not self._enabled(key):
            raise KeyStateError
        iv = wrapped[1 : 1 + _IV]
        return bytearray(
            key.decrypt(wrapped[1 + _IV :], **self._gcm_args(iv, label, version, context))
        )

    async def describe_key(self, key_id: str) -> BackendKey:
        """List the versions found on the token."""
        return await self._run(self._describe, key_id)

    def _describe(self, session: _Obj, label: str) -> BackendKey:
        current = self._current_version(session, label)
        versions = []
        for number in range(1, current + 1):
            key = self._find(session, version_label(label, number))
            if key is not None:  # a deleted version is skipped
                enabled = self._enabled(key)
                versions.append(KeyVersionInfo(number, "enabled" if enabled else "disabled"))
        key_id = f"{self._settings.token_label}/{label}"
        return BackendKey(key_id=key_id, current_version=current, versions=tuple(versions))

    async def rotate_key(self, key_id: str) -> BackendKey:
        """Generate `LABEL#v(N+1)` in the HSM; it becomes current."""
        return await self._run(self._rotate, key_id)

    def _rotate(self, session: _Obj, label: str) -> BackendKey:
        # Serialised in this process; across processes, rotate from one place.
        with self._rotate_lock:
            version = self._current_version(session, label) + 1
            self._create(session, label, version)
            self._current[label] = version
        return self._describe(session, label)

    async def ensure_key(self, key_id: str) -> bool:
        """Create version 1 of the key when the token has none; True when it was created."""
        return await self._run(self._ensure, key_id)

    def _ensure(self, session: _Obj, label: str) -> bool:
        with self._rotate_lock:
            if self._find(session, label) is not None:
                return False
            self._create(session, label, 1)
            return True

    async def set_version_state(
        self, key_id: str, version: int, *, enabled: bool
    ) -> KeyVersionInfo:
        """Set CKA_ENCRYPT and CKA_DECRYPT of one version object together."""
        return await self._run(self._set_state, key_id, version, enabled)

    def _set_state(self, session: _Obj, label: str, version: int, enabled: bool) -> KeyVersionInfo:  # noqa: FBT001
        key = self._version_key(session, label, version, KeyStateError("no such key version"))
        key[self._p11.Attribute.ENCRYPT] = enabled
        key[self._p11.Attribute.DECRYPT] = enabled
        return KeyVersionInfo(version=version, state="enabled" if enabled else "disabled")

    async def health(self) -> None:
        """Check that the token is reachable and logged in by drawing a few random bytes."""
        token = self._settings.token_label
        await self._run(lambda session, _: session.generate_random(64), f"{token}/health")

    async def close(self) -> None:
        """Finish running work, close the sessions and release the login."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        await asyncio.to_thread(self._pool.close)
