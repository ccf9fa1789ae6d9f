"""Turn a streaming source (binary file or iterable of chunks) into bounded chunks.

Chunks are bounded so that one huge item from an iterable never exceeds the message size
the daemon accepts, and empty items are dropped because they carry nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ._errors import InvalidParameterError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["SourceGuard", "aiter_chunks", "check_chunk_size", "check_source", "iter_chunks"]

_BYTES_LIKE = (bytes, bytearray, memoryview)
_T = TypeVar("_T")


class SourceGuard:
    """Remember an exception raised while reading the caller's source.

    gRPC reads request iterators on its own thread or task and reports a failure there only
    as a cancelled call; the guard lets the client re-raise the caller's real exception.
    """

    def __init__(self) -> None:
        """Start with no recorded error."""
        self.error: Exception | None = None

    def wrap(self, items: Iterator[_T]) -> Iterator[_T]:
        """Pass items through, recording the first exception the source raises."""
        try:
            yield from items
        except Exception as exc:
            self.error = exc
            raise

    async def awrap(self, items: AsyncIterator[_T]) -> AsyncIterator[_T]:
        """Async variant of wrap."""
        try:
            async for item in items:
                yield item
        except Exception as exc:
            self.error = exc
            raise


def check_chunk_size(chunk_size: int) -> int:
    """Refuse a chunk size that cannot make progress, before any call starts."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError("chunk_size must be an int")
    if chunk_size < 1:
        raise InvalidParameterError(f"chunk_size must be at least 1, got {chunk_size}")
    return chunk_size


def check_source(source: object) -> None:
    """Reject a bare payload, whose iteration would yield ints or characters."""
    if isinstance(source, (*_BYTES_LIKE, str)):
        raise TypeError(
            "source must be a binary file or an iterable of bytes chunks; "
            "wrap a single payload as [data] or io.BytesIO(data)"
        )


def _split(piece: object, chunk_size: int) -> Iterator[bytes]:
    """Yield one item of an iterable source as chunks of at most chunk_size bytes."""
    if not isinstance(piece, _BYTES_LIKE):
        raise TypeError(f"stream chunks must be bytes, not {type(piece).__name__}")
    view = memoryview(piece).cast("B")
    for offset in range(0, len(view), chunk_size):
        yield bytes(view[offset : offset + chunk_size])


def _checked_read(data: object) -> bytes:
    """Return what a file's read() gave, insisting on binary mode."""
    if not isinstance(data, _BYTES_LIKE):
        raise TypeError("source file must be opened in binary mode")
    return bytes(data)


def iter_chunks(source: Iterable[bytes] | BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Read a sync source as non-empty chunks of at most chunk_size bytes."""
    check_source(source)
    read = getattr(source, "read", None)
    if callable(read):
        while chunk := _checked_read(read(chunk_size)):
            yield chunk
        return
    for piece in source:
        yield from _split(piece, chunk_size)


async def aiter_chunks(
    source: Iterable[bytes] | AsyncIterable[bytes] | BinaryIO, chunk_size: int
) -> AsyncIterator[bytes]:
    """Read a sync or async source as chunks; file reads run in a thread to keep the loop free."""
    check_source(source)
    read = getattr(source, "read", None)
    if callable(read):
        while chunk := _checked_read(await asyncio.to_thread(read, chunk_size)):
            yield chunk
    elif isinstance(source, AsyncIterable):
        async for piece in source:
            for chunk in _split(piece, chunk_size):
                yield chunk
    else:
        for piece in source:
            for chunk in _split(piece, chunk_size):
                yield chunk
