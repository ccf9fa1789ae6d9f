"""The binary envelope formats of docs/wire-format.md: header encoding, parsing and format 1.

Format 1 (single shot)::

    u8 version=1 | u8 algorithm=1 | u8 flags | u8 N (1..64) | key name (N)
    | u32 key version | u16 W (1..2048) | wrapped DEK (W)
    | [u16 C (2..8192) | canonical context (C)]   (only when flag bit 0 is set)
    | commitment (32) | nonce (12) | ciphertext || tag (>= 16)

Format 2 (streaming) replaces the nonce with ``u32 segment size (4096..4194304) | salt (16)``
and is followed by segments (see ``broker.core.stream``). The header, every byte from the version
through the nonce (or salt), is authenticated together with the canonical context.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.core.aead import COMMITMENT_SIZE, NONCE_SIZE, STREAM_SALT_SIZE, TAG_SIZE, AeadError
from broker.core.context import (
    EMPTY_CONTEXT,
    MAX_CONTEXT_BYTES,
    ContextError,
    parse_canonical_context,
)

if TYPE_CHECKING:
    from broker.core.aead import DataKey

__all__ = [
    "ALGORITHM_AES256GCM_HKDF",
    "DEFAULT_SEGMENT_SIZE",
    "FLAG_CONTEXT_STORED",
    "FORMAT_STREAM",
    "FORMAT_V1",
    "KEY_NAME_CHARS",
    "KEY_NAME_PATTERN",
    "MAX_HEADER_SIZE",
    "MAX_KEY_NAME",
    "MAX_KEY_VERSION",
    "MAX_SEGMENT_SIZE",
    "MAX_STORED_CONTEXT",
    "MAX_WRAPPED_DEK",
    "MIN_SEGMENT_SIZE",
    "MIN_STORED_CONTEXT",
    "EnvelopeFormatError",
    "Header",
    "encode_prefix",
    "from_text",
    "open_v1",
    "parse_envelope",
    "parse_header",
    "resolve_context",
    "seal_v1",
    "to_text",
    "validate_key_name",
]

FORMAT_V1 = 1
FORMAT_STREAM = 2
ALGORITHM_AES256GCM_HKDF = 1
FLAG_CONTEXT_STORED = 1

MAX_KEY_NAME = 64
MAX_KEY_VERSION = 2**32 - 1
MAX_WRAPPED_DEK = 2048
MIN_STORED_CONTEXT = 2
MAX_STORED_CONTEXT = MAX_CONTEXT_BYTES
DEFAULT_SEGMENT_SIZE = 262144
MIN_SEGMENT_SIZE = 4096
MAX_SEGMENT_SIZE = 4194304
# The longest possible header (format 2, every length at its bound): parse_header never returns
# None for this many bytes, so a streaming reader never needs to buffer more to find the header.
_HEADER_FIXED_BYTES = 4 + 4 + 2 + 2 + COMMITMENT_SIZE + 4 + STREAM_SALT_SIZE
MAX_HEADER_SIZE = _HEADER_FIXED_BYTES + MAX_KEY_NAME + MAX_WRAPPED_DEK + MAX_STORED_CONTEXT

# A logical key name: 1..MAX_KEY_NAME of these characters, the first a letter or digit. The
# daemon's configuration and the envelope header accept exactly the same names.
KEY_NAME_CHARS = "[A-Za-z0-9._-]"
KEY_NAME_PATTERN = re.compile(rf"[A-Za-z0-9]{KEY_NAME_CHARS}{{0,{MAX_KEY_NAME - 1}}}")
# Every non-empty prefix of a valid name matches, so a partial name can be checked early.
_KEY_NAME_BYTES = re.compile(rf"[A-Za-z0-9]{KEY_NAME_CHARS}*".encode("ascii"))
_KEY_NAME_MESSAGE = (
    f"key name must be 1..{MAX_KEY_NAME} characters of {KEY_NAME_CHARS}, "
    "starting with a letter or digit"
)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class EnvelopeFormatError(ValueError):
    """Bytes that are not a well-formed envelope; the message is for the log, not the caller."""


def validate_key_name(name: str) -> str:
    """Return ``name`` if it is a valid logical key name, so bad names never reach a header."""
    if not isinstance(name, str) or KEY_NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(_KEY_NAME_MESSAGE)
    return name


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed envelope header; ``raw`` is its exact bytes, the first part of the AAD."""

    version: int
    algorithm: int
    key_name: str
    key_version: int
    wrapped_dek: bytes
    stored_context: bytes | None
    commitment: bytes
    nonce: bytes
    segment_size: int
    salt: bytes
    raw: bytes


def encode_prefix(  # noqa: PLR0913 -- every header field is a required keyword
    *,
    version: int,
    key_name: str,
    key_version: int,
    wrapped_dek: bytes,
    commitment: bytes,
    stored_context: bytes | None,
) -> bytes:
    """Encode the header up to and including the commitment, shared by all messages of a DEK."""
    if version not in (FORMAT_V1, FORMAT_STREAM):
        raise ValueError("format version must be 1 or 2")
    name = validate_key_name(key_name).encode("ascii")
    if not 0 <= key_version <= MAX_KEY_VERSION:
        raise ValueError("key version must be 0..2**32-1")
    if not 1 <= len(wrapped_dek) <= MAX_WRAPPED_DEK:
        raise ValueError(f"wrapped DEK must be 1..{MAX_WRAPPED_DEK} bytes")
    if len(commitment) != COMMITMENT_SIZE:
        raise ValueError(f"commitment must be {COMMITMENT_SIZE} bytes")
    flags = 0
    stored = b""
    if stored_context is not None:
        parse_canonical_context(stored_context)
        flags = FLAG_CONTEXT_STORED
        stored = _U16.pack(len(stored_context)) + stored_context
    return b"".join(
        (
            bytes((version, ALGORITHM_AES256GCM_HKDF, flags, len(name))),
            name,
            _U32.pack(key_version),
            _U16.pack(len(wrapped_dek)),
            wrapped_dek,
            stored,
            commitment,
        )
    )


class _IncompleteError(Exception):
    """The input ends before the header does."""


class _Reader:
    """Reads header fields in order, stopping when the input runs out."""

    __slots__ = ("_view", "pos")

    def __init__(self, view: memoryview) -> None:
        """Start at the first byte of ``view``."""
        self._view = view
        self.pos = 0

    def peek(self, size: int) -> bytes:
        """Return up to ``size`` bytes without consuming them (fewer at the end of input)."""
        return bytes(self._view[self.pos : self.pos + size])

    def take(self, size: int) -> bytes:
        """Consume exactly ``size`` bytes, or signal that the input is incomplete."""
        end = self.pos + size
        if end > len(self._view):
            raise _IncompleteError
        chunk = bytes(self._view[self.pos : end])
        self.pos = end
        return chunk

    def consumed(self) -> bytes:
        """Return every byte read so far."""
        return bytes(self._view[: self.pos])

    def u8(self) -> int:
        """Consume one byte."""
        return self.take(1)[0]

    def u16(self) -> int:
        """Consume a big-endian 16-bit integer."""
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        """Consume a big-endian 32-bit integer."""
        return int(_U32.unpack(self.take(4))[0])


def _read_key_name(reader: _Reader) -> str:
    """Read the length-prefixed key name, rejecting a bad length or character on sight."""
    length = reader.u8()
    if not 1 <= length <= MAX_KEY_NAME:
        raise EnvelopeFormatError(f"key name length {length} is outside 1..{MAX_KEY_NAME}")
    partial = reader.peek(length)
    if partial and _KEY_NAME_BYTES.fullmatch(partial) is None:
        raise EnvelopeFormatError(f"key name has a character outside {KEY_NAME_CHARS}")
    return reader.take(length).decode("ascii")


def _read_wrapped_dek(reader: _Reader) -> bytes:
    """Read the length-prefixed wrapped DEK."""
    length = reader.u16()
    if not 1 <= length <= MAX_WRAPPED_DEK:
        raise EnvelopeFormatError(f"wrapped DEK length {length} is outside 1..{MAX_WRAPPED_DEK}")
    return reader.take(length)


def _read_stored_context(reader: _Reader) -> bytes:
    """Read the length-prefixed stored context and check that it is canonical."""
    length = reader.u16()
    if not MIN_STORED_CONTEXT <= length <= MAX_STORED_CONTEXT:
        raise EnvelopeFormatError(
            f"stored context length {length} is outside {MIN_STORED_CONTEXT}..{MAX_STORED_CONTEXT}"
        )
    stored = reader.take(length)
    try:
        parse_canonical_context(stored)
    except ContextError as exc:
        raise EnvelopeFormatError(f"stored context is not canonical: {exc}") from None
    return stored


def _read_header(reader: _Reader) -> Header:
    """Read and check every header field in wire order."""
    version = reader.u8()
    if version not in (FORMAT_V1, FORMAT_STREAM):
        raise EnvelopeFormatError(f"unknown format version {version}")
    algorithm = reader.u8()
    if algorithm != ALGORITHM_AES256GCM_HKDF:
        raise EnvelopeFormatError(f"unknown algorithm {algorithm}")
    flags = reader.u8()
    if flags & ~FLAG_CONTEXT_STORED:
        raise EnvelopeFormatError(f"unknown flag bits {flags:#04x}")
    key_name = _read_key_name(reader)
    key_version = reader.u32()
    wrapped_dek = _read_wrapped_dek(reader)
    stored = _read_stored_context(reader) if flags & FLAG_CONTEXT_STORED else None
    commitment = reader.take(COMMITMENT_SIZE)
    nonce, segment_size, salt = b"", 0, b""
    if version == FORMAT_V1:
        nonce = reader.take(NONCE_SIZE)
    else:
        segment_size = reader.u32()
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise EnvelopeFormatError(
                f"segment size {segment_size} is outside {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}"
            )
        salt = reader.take(STREAM_SALT_SIZE)
    return Header(
        version=version,
        algorithm=algorithm,
        key_name=key_name,
        key_version=key_version,
        wrapped_dek=wrapped_dek,
        stored_context=stored,
        commitment=commitment,
        nonce=nonce,
        segment_size=segment_size,
        salt=salt,
        raw=reader.consumed(),
    )


def parse_header(data: bytes | bytearray | memoryview) -> Header | None:
    """Parse the header at the start of ``data``; None if ``data`` is a valid but short prefix."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    try:
        return _read_header(_Reader(view))
    except _IncompleteError:
        return None


def parse_envelope(data: bytes) -> tuple[Header, bytes]:
    """Split a complete envelope into its header and body, rejecting truncated input."""
    header = parse_header(data)
    if header is None:
        raise EnvelopeFormatError("envelope is shorter than its header")
    body = bytes(data[len(header.raw) :])
    if len(body) < TAG_SIZE:
        raise EnvelopeFormatError(f"envelope body is shorter than the {TAG_SIZE}-byte tag")
    return header, body


def resolve_context(header: Header, presented: bytes) -> bytes:
    """Choose the canonical context to authenticate: the stored one, if any, else the caller's."""
    stored = header.stored_context
    if stored is None:
        return presented
    if presented != EMPTY_CONTEXT and not hmac.compare_digest(presented, stored):
        raise EnvelopeFormatError("presented context differs from the stored context")
    return stored


def seal_v1(
    dk: DataKey,
    prefix: bytes,
    plaintext: bytes,
    context: bytes,
    nonce: bytes | None = None,
) -> bytes:
    """Seal one format 1 envelope; ``nonce`` is random unless fixed (known-answer vectors only)."""
    if not prefix or prefix[0] != FORMAT_V1:
        raise ValueError("prefix is not a format 1 header prefix")
    if not dk.matches(prefix[-COMMITMENT_SIZE:]):
        raise ValueError("prefix commitment was not made from this data key")
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    header = prefix + nonce
    return header + dk.seal(nonce, plaintext, header + context)


def open_v1(dk: DataKey, header: Header, body: bytes, context: bytes) -> bytes:
    """Open a format 1 body: commitment first (constant time), then AES-GCM over header+context."""
    if header.version != FORMAT_V1:
        raise EnvelopeFormatError("not a format 1 envelope")
    if not dk.matches(header.commitment):
        raise AeadError
    return dk.open(header.nonce, body, header.raw + context)


def to_text(envelope: bytes) -> str:
    """Encode an envelope as standard padded base64, for text columns."""
    return base64.b64encode(envelope).decode("ascii")


def from_text(text: str) -> bytes:
    """Decode the text form strictly: standard alphabet, padding, no whitespace, canonical bits."""
    if not isinstance(text, str) or not text.isascii():
        raise EnvelopeFormatError("envelope text is not ASCII base64")
    try:
        envelope = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise EnvelopeFormatError("envelope text is not valid base64") from None
    if not envelope or base64.b64encode(envelope).decode("ascii") != text:
        raise EnvelopeFormatError("envelope text is not canonical base64")
    return envelope
