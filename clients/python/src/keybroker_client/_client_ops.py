"""The blocking client's signing, RSA-OAEP, hashing, derivation and token calls.

They live apart from ``_client.py`` (envelopes, streams, leases, key administration) to
keep each module short; ``Client`` inherits them and binds the stubs to its channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar, overload

import grpc

from . import _convert_hashing as cvh
from . import _convert_kdf as cvk
from . import _convert_signing as cvs
from ._channel import check_timeout
from ._convert import check_bytes, check_key
from ._errors import (
    DecryptionError,
    EncryptionError,
    HashingError,
    KeybrokerError,
    KeyDerivationError,
    KMSError,
    SigningError,
    TokenGenerationError,
    error_from_rpc,
)
from ._gen.asymmetric_pb2_grpc import AsymmetricServiceStub
from ._gen.hashing_pb2_grpc import HashingServiceStub
from ._gen.key_derivation_pb2_grpc import KeyDerivationServiceStub
from ._gen.signing_pb2_grpc import SigningServiceStub
from ._gen.token_pb2_grpc import TokenServiceStub
from ._public_keys import PublicKeyCache, oaep_encrypt

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["ClientOperations"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class ClientOperations:
    """Operations on signing, RSA, HMAC and derivation keys the broker holds, and tokens."""

    _timeout: float
    _target: str

    def _bind_operations(self, channel: grpc.Channel) -> None:
        """Create the stubs these calls use on the client's channel."""
        self._signing = SigningServiceStub(channel)
        self._asymmetric = AsymmetricServiceStub(channel)
        self._hashing = HashingServiceStub(channel)
        self._derivation = KeyDerivationServiceStub(channel)
        self._tokens = TokenServiceStub(channel)
        self._public_keys = PublicKeyCache()

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        operation_error: type[KeybrokerError],
        timeout: float | None,
    ) -> _Resp:
        """Make one unary call with the deadline, mapping any failure to a client exception."""
        try:
            return method(request, timeout=check_timeout(timeout, self._timeout))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, operation_error, target=self._target) from exc

    def sign(self, data: bytes, *, key: str, timeout: float | None = None) -> bytes:
        """Sign data with a broker-held key (DER for ECDSA, raw for Ed25519 and RSA-PSS)."""
        request = cvs.sign_request(data, key)
        return self._unary(self._signing.Sign, request, SigningError, timeout).signature

    def verify(
        self, data: bytes, signature: bytes, *, key: str, timeout: float | None = None
    ) -> Literal[True]:
        """Return True for a valid signature; any other outcome raises (VerificationError)."""
        request = cvs.verify_request(data, signature, key)
        self._unary(self._signing.Verify, request, SigningError, timeout)
        return True

    def sign_batch(
        self, items: Sequence[bytes], *, key: str, timeout: float | None = None
    ) -> list[bytes | KeybrokerError]:
        """Sign many messages in one call; failed items come back as exceptions, in order."""
        request = cvs.sign_batch_request(items, key)
        response = self._unary(self._signing.SignBatch, request, SigningError, timeout)
        return cvs.sign_batch_results(response)

    def verify_batch(
        self, items: Sequence[tuple[bytes, bytes]], *, key: str, timeout: float | None = None
    ) -> list[Literal[True] | KeybrokerError]:
        """Verify (data, signature) pairs in one call; True or an exception per item, in order."""
        request = cvs.verify_batch_request(items, key)
        response = self._unary(self._signing.VerifyBatch, request, SigningError, timeout)
        return cvs.verify_batch_results(response)

    def public_key(self, key: str, *, timeout: float | None = None) -> bytes:
        """Return the PEM public key of a signing or RSA decryption key, to verify or encrypt."""
        request = cvs.public_key_request(key)
        return cvs.public_key_pem(
            self._unary(self._signing.GetPublicKey, request, KMSError, timeout)
        )

    def rsa_encrypt(self, plaintext: bytes, *, key: str, timeout: float | None = None) -> bytes:
        """RSA-OAEP-encrypt for a broker decryption key, locally once its public key is cached."""
        data = check_bytes("plaintext", plaintext)
        public_key = self._public_keys.get(check_key(key))
        if public_key is None:
            request = cvs.public_key_request(key)
            answer = self._unary(self._signing.GetPublicKey, request, EncryptionError, timeout)
            public_key = self._public_keys.put(key, answer)
        if public_key is None:  # not an RSA decryption key: the broker gives the verdict
            remote = cvs.asymmetric_encrypt_request(data, key)
            method = self._asymmetric.AsymmetricEncrypt
            return self._unary(method, remote, EncryptionError, timeout).ciphertext
        return oaep_encrypt(public_key, data)

    def rsa_decrypt(
        self,
        ciphertext: bytes,
        *,
        key: str,
        key_version: int = 0,
        timeout: float | None = None,
    ) -> bytes:
        """Decrypt RSA-OAEP ciphertext in the broker; key_version names an older version."""
        request = cvs.asymmetric_decrypt_request(ciphertext, key, key_version)
        method = self._asymmetric.AsymmetricDecrypt
        return self._unary(method, request, DecryptionError, timeout).plaintext

    def hash_password(
        self,
        password: str | bytes,
        *,
        pepper_key: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Hash a password with Argon2id in the broker; store the returned PHC string."""
        request = cvh.hash_password_request(password, pepper_key)
        return self._unary(self._hashing.HashPassword, request, HashingError, timeout).hash

    def verify_password(
        self,
        password: str | bytes,
        hash_string: str,
        *,
        pepper_key: str | None = None,
        timeout: float | None = None,
    ) -> Literal[True]:
        """Return True when the password matches the hash; a mismatch raises VerificationError."""
        request = cvh.verify_password_request(password, hash_string, pepper_key)
        self._unary(self._hashing.VerifyPassword, request, HashingError, timeout)
        return True

    def digest(self, data: bytes, *, timeout: float | None = None) -> str:
        """Return the SHA-256 of data as lowercase hex, computed by the broker."""
        request = cvh.digest_request(data)
        return cvh.digest_hex(self._unary(self._hashing.Digest, request, HashingError, timeout))

    def verify_digest(
        self, data: bytes, expected_hex: str | bytes, *, timeout: float | None = None
    ) -> Literal[True]:
        """Return True when SHA-256(data) matches (hex str or raw bytes); else VerificationError."""
        request = cvh.verify_digest_request(data, expected_hex)
        self._unary(self._hashing.VerifyDigest, request, HashingError, timeout)
        return True

    def hmac(self, data: bytes, *, key: str, timeout: float | None = None) -> bytes:
        """Return HMAC-SHA256 of data under a broker-held HMAC key."""
        request = cvh.hmac_request(data, key)
        return self._unary(self._hashing.ComputeHmac, request, HashingError, timeout).mac

    def hmac_verify(
        self, data: bytes, mac: bytes, *, key: str, timeout: float | None = None
    ) -> Literal[True]:
        """Return True when the MAC matches (compared in constant time); else VerificationError."""
        request = cvh.verify_hmac_request(data, mac, key)
        self._unary(self._hashing.VerifyHmac, request, HashingError, timeout)
        return True

    def hmac_batch(
        self, items: Sequence[bytes], *, key: str, timeout: float | None = None
    ) -> list[bytes | KeybrokerError]:
        """MAC many items in one call; failed items come back as exceptions, in order."""
        request = cvh.hmac_batch_request(items, key)
        response = self._unary(self._hashing.ComputeHmacBatch, request, HashingError, timeout)
        return cvh.hmac_batch_results(response)

    def blind_index(  # noqa: PLR0913 - the fixed public keywords plus the deadline
        self,
        value: bytes,
        *,
        key: str,
        field: str,
        tenant: str,
        length: int = 32,
        timeout: float | None = None,
    ) -> bytes:
        """Return a deterministic, searchable token for value, distinct per field and tenant."""
        request = cvh.blind_index_request(value, key, field, tenant, length)
        return self._unary(self._hashing.BlindIndex, request, HashingError, timeout).index

    def blind_index_batch(  # noqa: PLR0913 - the fixed public keywords plus the deadline
        self,
        values: Sequence[bytes],
        *,
        key: str,
        field: str,
        tenant: str,
        length: int = 32,
        timeout: float | None = None,
    ) -> list[bytes | KeybrokerError]:
        """Blind-index many values in one call (bulk indexing); failed items come back in place."""
        request = cvh.blind_index_batch_request(values, key, field, tenant, length)
        response = self._unary(self._hashing.BlindIndexBatch, request, HashingError, timeout)
        return cvh.blind_index_batch_results(response)

    def derive_key(  # noqa: PLR0913 - the fixed public keywords plus the deadline
        self,
        *,
        key: str,
        info: bytes = b"",
        context: Mapping[str, str] | None = None,
        salt: bytes = b"",
        length: int = 32,
        timeout: float | None = None,
    ) -> bytes:
        """Derive a key with HKDF-SHA256 from a broker secret; same inputs give the same key."""
        request = cvk.hkdf_request(key, info, context, salt, length)
        method = self._derivation.DeriveKeyHkdf
        return self._unary(method, request, KeyDerivationError, timeout).derived_key

    def derive_key_pbkdf2(
        self,
        password: str | bytes,
        *,
        salt: bytes | None = None,
        iterations: int = 600_000,
        length: int = 32,
        timeout: float | None = None,
    ) -> tuple[bytes, bytes]:
        """Stretch a password with PBKDF2-HMAC-SHA256 in the broker; returns (key, salt)."""
        request = cvk.pbkdf2_request(password, salt, iterations, length)
        method = self._derivation.DeriveKeyPbkdf2
        return cvk.pbkdf2_result(self._unary(method, request, KeyDerivationError, timeout))

    @overload
    def token(
        self,
        length: int = 32,
        *,
        encoding: Literal["urlsafe", "hex"] = "urlsafe",
        timeout: float | None = None,
    ) -> str: ...
    @overload
    def token(
        self, length: int = 32, *, encoding: Literal["bytes"], timeout: float | None = None
    ) -> bytes: ...
    @overload
    def token(
        self, length: int = 32, *, encoding: str, timeout: float | None = None
    ) -> str | bytes: ...
    def token(
        self,
        length: int = 32,
        *,
        encoding: str = "urlsafe",
        timeout: float | None = None,
    ) -> str | bytes:
        """Return length random bytes from the broker's CSPRNG, as urlsafe text, hex or bytes."""
        request = cvk.token_request(length, encoding)
        response = self._unary(self._tokens.GenerateToken, request, TokenGenerationError, timeout)
        return cvk.token_result(response, encoding)
