"""Request building and response conversion for signing and RSA-OAEP, shared by both clients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._convert import check_bytes, check_key, check_sequence
from ._errors import InvalidParameterError, KeybrokerError, SigningError, error_from_item
from ._gen import asymmetric_pb2 as asym_pb
from ._gen import signing_pb2 as sig_pb

if TYPE_CHECKING:
    from collections.abc import Sequence

_UINT32_MAX = 2**32 - 1

__all__ = [
    "asymmetric_decrypt_request",
    "asymmetric_encrypt_request",
    "public_key_pem",
    "public_key_request",
    "sign_batch_request",
    "sign_batch_results",
    "sign_request",
    "verify_batch_request",
    "verify_batch_results",
    "verify_request",
]


def sign_request(data: object, key: str) -> sig_pb.SignRequest:
    """Build a Sign request over the whole message (also one SignBatch item)."""
    return sig_pb.SignRequest(key=check_key(key), data=check_bytes("data", data))


def verify_request(data: object, signature: object, key: str) -> sig_pb.VerifyRequest:
    """Build a Verify request; key version 0 lets the broker try every enabled version."""
    return sig_pb.VerifyRequest(
        key=check_key(key),
        data=check_bytes("data", data),
        signature=check_bytes("signature", signature),
    )


def sign_batch_request(items: Sequence[bytes], key: str) -> sig_pb.SignBatchRequest:
    """Build a SignBatch request: every message signed with the same key."""
    check_sequence("items", items)
    return sig_pb.SignBatchRequest(items=[sign_request(item, key) for item in items])


def _pair(item: object) -> tuple[object, object]:
    """Verify-batch items are (data, signature) pairs; say so instead of failing on unpacking."""
    if not isinstance(item, tuple) or len(item) != 2:  # noqa: PLR2004 - a pair
        raise TypeError("verify_batch items must be (data, signature) tuples")
    return item[0], item[1]


def verify_batch_request(
    items: Sequence[tuple[bytes, bytes]], key: str
) -> sig_pb.VerifyBatchRequest:
    """Build a VerifyBatch request from (data, signature) pairs under one key."""
    check_sequence("items", items)
    return sig_pb.VerifyBatchRequest(
        items=[verify_request(*_pair(item), key) for item in items],
    )


def sign_batch_results(response: sig_pb.SignBatchResponse) -> list[bytes | KeybrokerError]:
    """Signatures in request order, failed items as exception instances."""
    return [
        error_from_item(r.error, SigningError)
        if r.WhichOneof("result") == "error"
        else r.response.signature
        for r in response.results
    ]


def verify_batch_results(
    response: sig_pb.VerifyBatchResponse,
) -> list[Literal[True] | KeybrokerError]:
    """True for each valid signature; an invalid one is a VerificationError in its place.

    The reason word VERIFICATION_FAILED picks VerificationError; any other failure keeps
    its own class, so a broker fault is never mistaken for a forged signature.
    """
    return [
        error_from_item(r.error, SigningError) if r.WhichOneof("result") == "error" else True
        for r in response.results
    ]


def public_key_request(key: str) -> sig_pb.GetPublicKeyRequest:
    """Build a GetPublicKey request for the key's current version."""
    return sig_pb.GetPublicKeyRequest(key=check_key(key))


def public_key_pem(response: sig_pb.GetPublicKeyResponse) -> bytes:
    """Return the PEM as bytes, the form pyca's ``load_pem_public_key`` takes."""
    return response.pem.encode("ascii")


def asymmetric_encrypt_request(plaintext: object, key: str) -> asym_pb.AsymmetricEncryptRequest:
    """Build an AsymmetricEncrypt request (no OAEP label, as the seed used none)."""
    return asym_pb.AsymmetricEncryptRequest(
        key=check_key(key), plaintext=check_bytes("plaintext", plaintext)
    )


def asymmetric_decrypt_request(
    ciphertext: object, key: str, key_version: int
) -> asym_pb.AsymmetricDecryptRequest:
    """Build an AsymmetricDecrypt request; version 0 means the key's current version."""
    if isinstance(key_version, bool) or not isinstance(key_version, int):
        raise TypeError(f"key_version must be an int, not {type(key_version).__name__}")
    if not 0 <= key_version <= _UINT32_MAX:
        raise InvalidParameterError(
            f"key_version must be 0 (current) or a version number, got {key_version}",
            reason="INVALID_ARGUMENT",
        )
    return asym_pb.AsymmetricDecryptRequest(
        key=check_key(key),
        ciphertext=check_bytes("ciphertext", ciphertext),
        key_version=key_version,
    )
