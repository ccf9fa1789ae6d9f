"""Request building and response conversion for key derivation and tokens, for both clients."""

from __future__ import annotations

from ._convert import Context, check_bytes, check_context, check_count, check_key
from ._errors import InvalidParameterError
from ._gen import key_derivation_pb2 as kdf_pb
from ._gen import token_pb2 as tok_pb

__all__ = [
    "hkdf_request",
    "pbkdf2_request",
    "pbkdf2_result",
    "token_request",
    "token_result",
]

_ENCODINGS: dict[str, tok_pb.TokenEncoding.ValueType] = {
    "urlsafe": tok_pb.TOKEN_ENCODING_URLSAFE,
    "hex": tok_pb.TOKEN_ENCODING_HEX,
    "bytes": tok_pb.TOKEN_ENCODING_BYTES,
}


def hkdf_request(
    key: str, info: object, context: Context, salt: object, length: int
) -> kdf_pb.DeriveKeyHkdfRequest:
    """Build a DeriveKeyHkdf request; the broker appends the context to info canonically."""
    return kdf_pb.DeriveKeyHkdfRequest(
        key=check_key(key),
        info=check_bytes("info", info),
        context=check_context(context),
        salt=check_bytes("salt", salt),
        length=check_count("length", length),
    )


def _password_bytes(password: object) -> bytes:
    """PBKDF2 stretches bytes; text is taken as UTF-8, the encoding the seed used."""
    if isinstance(password, str):
        return password.encode("utf-8")
    return check_bytes("password", password)


def pbkdf2_request(
    password: object, salt: object | None, iterations: int, length: int
) -> kdf_pb.DeriveKeyPbkdf2Request:
    """Build a DeriveKeyPbkdf2 request; no salt asks the broker for a fresh random one."""
    salt_bytes = b"" if salt is None else check_bytes("salt", salt)
    if salt is not None and not salt_bytes:
        # The wire reads an empty salt as "make one", which would surprise this caller.
        raise InvalidParameterError(
            "salt must not be empty; pass None for a fresh random salt", reason="INVALID_ARGUMENT"
        )
    return kdf_pb.DeriveKeyPbkdf2Request(
        password=_password_bytes(password),
        salt=salt_bytes,
        iterations=check_count("iterations", iterations),
        length=check_count("length", length),
    )


def pbkdf2_result(response: kdf_pb.DeriveKeyPbkdf2Response) -> tuple[bytes, bytes]:
    """The seed's (key, salt) pair: keep the salt to derive the same key again."""
    return response.derived_key, response.salt


def token_request(length: int, encoding: str) -> tok_pb.GenerateTokenRequest:
    """Build a GenerateToken request; the broker enforces the 16-byte minimum."""
    if encoding not in _ENCODINGS:
        raise InvalidParameterError(
            f"encoding must be one of {', '.join(map(repr, _ENCODINGS))}, got {encoding!r}",
            reason="INVALID_ARGUMENT",
        )
    return tok_pb.GenerateTokenRequest(
        length=check_count("length", length), encoding=_ENCODINGS[encoding]
    )


def token_result(response: tok_pb.GenerateTokenResponse, encoding: str) -> str | bytes:
    """Raw bytes for ``"bytes"``, the broker's text form for ``"hex"`` and ``"urlsafe"``."""
    return response.token if encoding == "bytes" else response.text
