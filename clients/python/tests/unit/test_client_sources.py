import io

import pytest

import keybroker_client as kb
from keybroker_client._sources import aiter_chunks, check_chunk_size, iter_chunks


class TestIterChunks:
    """Reading sync sources as bounded chunks."""

    def test_file_is_read_in_chunk_size_pieces(self):
        """A binary file yields chunk_size pieces and a shorter last one."""
        assert list(iter_chunks(io.BytesIO(b"abcdefg"), 3)) == [b"abc", b"def", b"g"]

    def test_empty_items_are_dropped(self):
        """Empty chunks carry nothing and are not sent."""
        assert list(iter_chunks([b"", b"ab", b""], 8)) == [b"ab"]

    def test_bytearray_and_memoryview_items_are_accepted(self):
        """Any bytes-like item is sent as bytes."""
        assert list(iter_chunks([bytearray(b"ab"), memoryview(b"cd")], 8)) == [b"ab", b"cd"]

    def test_text_file_is_refused(self):
        """A file opened in text mode is reported with the fix."""
        with pytest.raises(TypeError, match="binary mode"):
            list(iter_chunks(io.StringIO("text"), 8))

    def test_text_items_are_refused(self):
        """An iterable of str is reported with the offending type."""
        with pytest.raises(TypeError, match="not str"):
            list(iter_chunks(["text"], 8))

    @pytest.mark.parametrize("size", [0, -5])
    def test_chunk_size_must_be_positive(self, size):
        """A chunk size that cannot make progress is refused."""
        with pytest.raises(kb.InvalidParameterError, match="at least 1"):
            check_chunk_size(size)


class TestAiterChunks:
    """Reading sync and async sources from asyncio."""

    async def test_file_is_read_off_the_loop(self):
        """A binary file is read in chunk_size pieces."""
        chunks = [c async for c in aiter_chunks(io.BytesIO(b"abcde"), 2)]

        assert chunks == [b"ab", b"cd", b"e"]

    async def test_async_iterable_items_are_split(self):
        """Async items over chunk_size are split like sync ones."""

        async def source():
            yield b"abcde"

        assert [c async for c in aiter_chunks(source(), 2)] == [b"ab", b"cd", b"e"]

    async def test_sync_iterables_work_too(self):
        """A plain list is accepted by the async client."""
        assert [c async for c in aiter_chunks([b"ab", b"c"], 8)] == [b"ab", b"c"]
