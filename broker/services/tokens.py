"""Token use case: random tokens from the operating system's CSPRNG."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from broker.errors import InvalidRequestError

if TYPE_CHECKING:
    from broker.policy.authorizer import Caller
    from broker.services.operations import Operations

__all__ = ["TOKEN_LENGTHS", "Token", "TokenEncoding", "TokenService"]

TOKEN_LENGTHS: Final = (16, 1024)
_DEFAULT_LENGTH: Final = 32
TokenEncoding = Literal["bytes", "hex", "urlsafe"]


@dataclass(frozen=True, slots=True)
class Token:
    """A token: raw bytes for the `bytes` encoding, otherwise its text form."""

    raw: bytes = field(repr=False)
    text: str = field(repr=False)


class TokenService:
    """Generates tokens for authorized callers."""

    def __init__(self, ops: Operations) -> None:
        """Use the shared authorization plumbing."""
        self._ops = ops

    def generate(self, caller: Caller, length: int, encoding: TokenEncoding) -> Token:
        """`length` random bytes (0 means 32) as raw bytes, lowercase hex or unpadded base64url."""
        length = length or _DEFAULT_LENGTH
        lo, hi = TOKEN_LENGTHS
        if not lo <= length <= hi:
            raise InvalidRequestError(f"token length must be {lo}..{hi} bytes (got {length})")
        self._ops.authorize(caller, "token")
        raw = secrets.token_bytes(length)
        if encoding == "bytes":
            return Token(raw, "")
        if encoding == "hex":
            return Token(b"", raw.hex())
        return Token(b"", base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"))
