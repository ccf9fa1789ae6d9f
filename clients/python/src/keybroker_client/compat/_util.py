"""Input handling shared by the seed-compatible modules."""

from __future__ import annotations

import base64
import binascii

from keybroker_client._convert import check_bytes

from .exceptions import InvalidParameterError

__all__ = ["b64decode_text", "invalid", "text_or_bytes"]


def text_or_bytes(name: str, value: object) -> bytes:
    """The seed took str (encoded as UTF-8) wherever it took bytes; keep accepting both."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return check_bytes(name, value)


def invalid(message: str) -> InvalidParameterError:
    """A local parameter error carrying the broker's reason word, so handlers treat both alike."""
    return InvalidParameterError(message, reason="INVALID_ARGUMENT")


def b64decode_text(name: str, value: object) -> bytes | None:
    """Standard base64 text (str or ASCII bytes) as bytes; None when it is not base64."""
    if isinstance(value, str):
        raw = value.encode("ascii", errors="replace")
    else:
        raw = check_bytes(name, value)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        return None
