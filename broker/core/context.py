"""Canonical encoding of an encryption context, the caller's key/value pairs bound to an envelope.

The encoding (docs/wire-format.md, "Canonical context encoding") is::

    u16 pair count (0..64)
    per pair, sorted by the key's UTF-8 bytes, keys unique:
        u16 key length (1..256)    key, UTF-8
        u16 value length (0..2048) value, UTF-8

and is at most 8192 bytes long. The empty context encodes as ``00 00``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "EMPTY_CONTEXT",
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_KEY_BYTES",
    "MAX_CONTEXT_PAIRS",
    "MAX_CONTEXT_VALUE_BYTES",
    "ContextError",
    "canonical_context",
    "parse_canonical_context",
]

MAX_CONTEXT_PAIRS = 64
MAX_CONTEXT_KEY_BYTES = 256
MAX_CONTEXT_VALUE_BYTES = 2048
MAX_CONTEXT_BYTES = 8192

EMPTY_CONTEXT = b"\x00\x00"

_U16 = struct.Struct(">H")

_TOO_MANY_PAIRS = f"encryption context has more than {MAX_CONTEXT_PAIRS} pairs"
_BAD_KEY = f"encryption context key must be 1..{MAX_CONTEXT_KEY_BYTES} bytes of UTF-8"
_BAD_VALUE = f"encryption context value must be at most {MAX_CONTEXT_VALUE_BYTES} bytes of UTF-8"
_TOO_LONG = f"encryption context encoding is longer than {MAX_CONTEXT_BYTES} bytes"
_NOT_STRINGS = "encryption context keys and values must be strings"
_TRUNCATED = "encryption context encoding is truncated"
_TRAILING = "encryption context encoding has trailing bytes"
_UNSORTED = "encryption context keys must be sorted by their UTF-8 bytes and unique"


class ContextError(ValueError):
    """An encryption context breaks a bound; the message names the bound, never a key or value."""


def _encode_text(text: object, message: str) -> bytes:
    """Encode one key or value as UTF-8, refusing non-strings and unpaired surrogates."""
    if not isinstance(text, str):
        raise ContextError(_NOT_STRINGS)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ContextError(message) from None


def canonical_context(context: Mapping[str, str]) -> bytes:
    """Encode a context canonically so equal contexts always authenticate as equal bytes."""
    if len(context) > MAX_CONTEXT_PAIRS:
        raise ContextError(_TOO_MANY_PAIRS)
    pairs: list[tuple[bytes, bytes]] = []
    for key, value in context.items():
        key_bytes = _encode_text(key, _BAD_KEY)
        if not 1 <= len(key_bytes) <= MAX_CONTEXT_KEY_BYTES:
            raise ContextError(_BAD_KEY)
        value_bytes = _encode_text(value, _BAD_VALUE)
        if len(value_bytes) > MAX_CONTEXT_VALUE_BYTES:
            raise ContextError(_BAD_VALUE)
        pairs.append((key_bytes, value_bytes))
    # Distinct str keys have distinct UTF-8 encodings, so sorting leaves no duplicates.
    pairs.sort(key=lambda pair: pair[0])
    out = bytearray(_U16.pack(len(pairs)))
    for key_bytes, value_bytes in pairs:
        out += _U16.pack(len(key_bytes))
        out += key_bytes
        out += _U16.pack(len(value_bytes))
        out += value_bytes
        if len(out) > MAX_CONTEXT_BYTES:
            raise ContextError(_TOO_LONG)
    return bytes(out)


class _Cursor:
    """Reads length-prefixed fields from a context encoding, failing on truncation."""

    __slots__ = ("_data", "pos")

    def __init__(self, data: bytes) -> None:
        """Start reading at the first byte of ``data``."""
        self._data = data
        self.pos = 0

    def u16(self) -> int:
        """Read one big-endian 16-bit length."""
        raw = self.take(2)
        return int(_U16.unpack(raw)[0])

    def take(self, size: int) -> bytes:
        """Read exactly ``size`` bytes."""
        end = self.pos + size
        if end > len(self._data):
            raise ContextError(_TRUNCATED)
        chunk = self._data[self.pos : end]
        self.pos = end
        return chunk


def _decode_text(raw: bytes, message: str) -> str:
    """Decode one key or value strictly as UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ContextError(message) from None


def parse_canonical_context(data: bytes) -> dict[str, str]:
    """Decode a canonical context, rejecting every encoding ``canonical_context`` cannot produce."""
    data = bytes(data)
    if len(data) > MAX_CONTEXT_BYTES:
        raise ContextError(_TOO_LONG)
    cursor = _Cursor(data)
    count = cursor.u16()
    if count > MAX_CONTEXT_PAIRS:
        raise ContextError(_TOO_MANY_PAIRS)
    result: dict[str, str] = {}
    previous: bytes | None = None
    for _ in range(count):
        key_length = cursor.u16()
        if not 1 <= key_length <= MAX_CONTEXT_KEY_BYTES:
            raise ContextError(_BAD_KEY)
        key_bytes = cursor.take(key_length)
        if previous is not None and key_bytes <= previous:
            raise ContextError(_UNSORTED)
        previous = key_bytes
        value_length = cursor.u16()
        if value_length > MAX_CONTEXT_VALUE_BYTES:
            raise ContextError(_BAD_VALUE)
        value_bytes = cursor.take(value_length)
        result[_decode_text(key_bytes, _BAD_KEY)] = _decode_text(value_bytes, _BAD_VALUE)
    if cursor.pos != len(data):
        raise ContextError(_TRAILING)
    return result
