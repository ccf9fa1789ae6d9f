"""Input handling shared by the seed-compatible modules."""

from __future__ import annotations

from keybroker_client._convert import check_bytes
from keybroker_client._errors import InvalidParameterError

__all__ = ["invalid", "text_or_bytes"]


def text_or_bytes(name: str, value: object) -> bytes:
    """The seed took str (encoded as UTF-8) wherever it took bytes; keep accepting both."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return check_bytes(name, value)


def invalid(message: str) -> InvalidParameterError:
    """A local parameter error carrying the broker's reason word, so handlers treat both alike."""
    return InvalidParameterError(message, reason="INVALID_ARGUMENT")
