"""Request building and response conversion for hashing, shared by both clients.

Covers password hashing, SHA-256 digests, HMACs under broker keys and blind indexes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._convert import check_bytes, check_count, check_key, check_sequence
from ._errors import HashingError, InvalidParameterError, KeybrokerError, error_from_item
from ._gen import hashing_pb2 as hash_pb

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "blind_index_batch_request",
    "blind_index_batch_results",
    "blind_index_request",
    "digest_hex",
    "digest_request",
    "hash_password_request",
    "hmac_batch_request",
    "hmac_batch_results",
    "hmac_request",
    "password_text",
    "verify_digest_request",
    "verify_hmac_request",
    "verify_password_request",
]


def password_text(password: object) -> str:
    """Passwords travel as text; bytes are accepted when they are UTF-8, as the seed allowed."""
    if isinstance(password, str):
        return password
    raw = check_bytes("password", password)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameterError(
            "password bytes must be UTF-8 text", reason="INVALID_ARGUMENT"
        ) from None


def _pepper(pepper_key: str | None) -> str:
    """No pepper key is sent as the empty name, which the broker reads as "no pepper"."""
    return "" if pepper_key is None else check_key(pepper_key, "pepper_key")


def hash_password_request(password: object, pepper_key: str | None) -> hash_pb.HashPasswordRequest:
    """Build a HashPassword request."""
    return hash_pb.HashPasswordRequest(
        password=password_text(password), pepper_key=_pepper(pepper_key)
    )


def verify_password_request(
    password: object, hash_string: object, pepper_key: str | None
) -> hash_pb.VerifyPasswordRequest:
    """Build a VerifyPassword request against a stored PHC hash string."""
    if not isinstance(hash_string, str):
        raise TypeError(f"hash_string must be str, not {type(hash_string).__name__}")
    return hash_pb.VerifyPasswordRequest(
        password=password_text(password), hash=hash_string, pepper_key=_pepper(pepper_key)
    )


def digest_request(data: object) -> hash_pb.DigestRequest:
    """Build a Digest request."""
    return hash_pb.DigestRequest(data=check_bytes("data", data))


def digest_hex(response: hash_pb.DigestResponse) -> str:
    """The lowercase hex digest, derived from the raw one if the daemon sent only that."""
    return response.hex or response.digest.hex()


def verify_digest_request(data: object, expected: object) -> hash_pb.VerifyDigestRequest:
    """Build a VerifyDigest request: a str is the hex digest, bytes the raw 32-byte one."""
    payload = check_bytes("data", data)
    if isinstance(expected, str):
        return hash_pb.VerifyDigestRequest(data=payload, hex=expected)
    return hash_pb.VerifyDigestRequest(data=payload, digest=check_bytes("expected_hex", expected))


def hmac_request(data: object, key: str) -> hash_pb.ComputeHmacRequest:
    """Build a ComputeHmac request (also one ComputeHmacBatch item)."""
    return hash_pb.ComputeHmacRequest(key=check_key(key), data=check_bytes("data", data))


def verify_hmac_request(data: object, mac: object, key: str) -> hash_pb.VerifyHmacRequest:
    """Build a VerifyHmac request; the broker compares in constant time."""
    return hash_pb.VerifyHmacRequest(
        key=check_key(key), data=check_bytes("data", data), mac=check_bytes("mac", mac)
    )


def hmac_batch_request(items: Sequence[bytes], key: str) -> hash_pb.ComputeHmacBatchRequest:
    """Build a ComputeHmacBatch request: every item under the same key."""
    check_sequence("items", items)
    return hash_pb.ComputeHmacBatchRequest(items=[hmac_request(item, key) for item in items])


def hmac_batch_results(
    response: hash_pb.ComputeHmacBatchResponse,
) -> list[bytes | KeybrokerError]:
    """MACs in request order, failed items as exception instances."""
    return [
        error_from_item(r.error, HashingError)
        if r.WhichOneof("result") == "error"
        else r.response.mac
        for r in response.results
    ]


def blind_index_request(
    value: object, key: str, field: str, tenant: str, length: int
) -> hash_pb.BlindIndexRequest:
    """Build a BlindIndex request (also one BlindIndexBatch item)."""
    return hash_pb.BlindIndexRequest(
        key=check_key(key),
        field=check_key(field, "field"),
        tenant=check_key(tenant, "tenant"),
        value=check_bytes("value", value),
        length=check_count("length", length),
    )


def blind_index_batch_request(
    values: Sequence[bytes], key: str, field: str, tenant: str, length: int
) -> hash_pb.BlindIndexBatchRequest:
    """Build a BlindIndexBatch request: every value for the same key, field and tenant."""
    check_sequence("values", values)
    return hash_pb.BlindIndexBatchRequest(
        items=[blind_index_request(v, key, field, tenant, length) for v in values]
    )


def blind_index_batch_results(
    response: hash_pb.BlindIndexBatchResponse,
) -> list[bytes | KeybrokerError]:
    """Index tokens in request order, failed items as exception instances."""
    return [
        error_from_item(r.error, HashingError)
        if r.WhichOneof("result") == "error"
        else r.response.index
        for r in response.results
    ]
