"""Fuzz the stream decoder (broker/core/stream.py) and the DecryptStream session around it.

An input is: byte 0, the seed of how the envelope is cut into chunks; byte 1, which context
the caller presents; then a format 2 envelope. For every input:

* StreamDecryptor raises nothing but AeadError; fed the body in chunks of any size it answers
  exactly what `open_stream` answers for the whole body;
* after a failure it refuses every later call with AeadError, after finalize with RuntimeError;
* the plaintext it releases before a failure is a prefix of what the seed with that header
  sealed, and a stream opens only if the seeds sealed exactly these bytes: no truncation at a
  segment boundary, no dropped, reordered, repeated or appended segment is ever accepted;
* DecryptStreamSession (the DecryptStream RPC's use case), fed the same input in chunks, header
  included, releases only such prefixes and ends with the same plaintext or with the fixed
  DecryptionFailedError, never another exception.

    .venv/bin/python fuzz/fuzz_stream.py -max_total_time=60
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from typing import TYPE_CHECKING

from _harness import FindingError, Harness, Target, instrumented, main

with instrumented():
    from _envelopes import CALLER, CONTEXTS, Envelopes

    from broker.core.aead import TAG_SIZE, AeadError, DataKey
    from broker.core.context import canonical_context, parse_canonical_context
    from broker.core.stream import StreamDecryptor, open_stream
    from broker.core.wire import (
        FORMAT_STREAM,
        MIN_SEGMENT_SIZE,
        EnvelopeFormatError,
        Header,
        parse_header,
        resolve_context,
    )
    from broker.errors import DECRYPTION_FAILED_MESSAGE, BrokerError, DecryptionFailedError
    from broker.services.streams import DecryptStreamSession

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

# Empty, one byte, just under, at and over one segment, and three segments.
SIZES = (0, 1, MIN_SEGMENT_SIZE - 1, MIN_SEGMENT_SIZE, MIN_SEGMENT_SIZE + 1, 9000)
_OPTION_BYTES = 2
_SMALL_CHUNK = 64
_WRONG_KEY = DataKey(os.urandom(32))
# (plaintext or None when it did not open, plaintext released on the way)
Outcome = tuple[bytes | None, bytes]


def _plaintext(size: int) -> bytes:
    """Recognisable plaintext, so a segment out of place cannot go unnoticed."""
    return bytes(i * 7 % 251 for i in range(size))


async def _seal_all(envelopes: Envelopes) -> dict[bytes, tuple[int, bytes]]:
    """Envelope -> (index of its context, plaintext), in the smallest segments."""
    sealed: dict[bytes, tuple[int, bytes]] = {}
    for index, context in enumerate(CONTEXTS[:3]):
        for store in (False, True):
            for size in SIZES:
                plaintext = _plaintext(size)
                envelope = await envelopes.stream_envelope(
                    context, plaintext, store=store, segment_size=MIN_SEGMENT_SIZE
                )
                sealed[envelope] = (index, plaintext)
    return sealed


def _chunks(data: bytes, seed: int) -> list[bytes]:
    """Cut data into pieces of 1 byte up to two sealed segments, the same way for one seed."""
    rng = random.Random(seed)  # noqa: S311 - reproducible cuts, not secrets
    pieces, pos = [], 0
    while pos < len(data):
        top = _SMALL_CHUNK if rng.getrandbits(1) else 2 * (MIN_SEGMENT_SIZE + TAG_SIZE)
        size = rng.randint(1, top)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


def _refuses(decryptor: StreamDecryptor, error: type[Exception]) -> None:
    """Both update and finalize raise `error` once the stream failed or finished."""
    for call in (lambda: decryptor.update(b"\0"), decryptor.finalize):
        try:
            call()
        except error:
            continue
        raise FindingError(f"a spent decryptor did not refuse a call with {error.__name__}")


def _chunked(dk: DataKey, header: Header, body: bytes, context: bytes, seed: int) -> Outcome:
    """Open the body in chunks; what it opened and what it released."""
    try:
        decryptor = StreamDecryptor(dk, header, context)
    except AeadError:
        return None, b""
    released = bytearray()
    try:
        for chunk in _chunks(body, seed):
            released += decryptor.update(chunk)
        released += decryptor.finalize()
    except AeadError:
        _refuses(decryptor, AeadError)
        return None, bytes(released)
    _refuses(decryptor, RuntimeError)
    return bytes(released), bytes(released)


def _whole(dk: DataKey, header: Header, body: bytes, context: bytes) -> bytes | None:
    """Open the body in one piece, as unary Decrypt does."""
    try:
        return open_stream(dk, header, body, context)
    except AeadError:
        return None


class _Checker:
    """Runs one input through the decoder and the session, and holds them to the seeds."""

    def __init__(self, envelopes: Envelopes, sealed: dict[bytes, tuple[int, bytes]]) -> None:
        """Index the seeds by envelope and by header."""
        self._envelopes = envelopes
        self._sealed = sealed
        self._by_header: dict[bytes, bytes] = {}
        for envelope, (_, plaintext) in sealed.items():
            header = parse_header(envelope)
            if header is None:
                raise FindingError("a sealed seed has no whole header")
            self._by_header[header.raw] = plaintext

    async def run(self, data: bytes) -> None:
        """Check one input: decoder against itself, session against decoder, both against seeds."""
        envelope, presented = data[_OPTION_BYTES:], CONTEXTS[data[1] % len(CONTEXTS)]
        core = await self._core(envelope, canonical_context(presented), data[0])
        session = await self._session(envelope, presented, data[0])
        if session[0] != core[0]:
            raise FindingError("DecryptStream and the decoder disagree on this stream")
        for opened, released in (core, session):
            self._check_released(envelope, released, opened)

    async def _core(self, envelope: bytes, presented: bytes, seed: int) -> Outcome:
        """The decoder's outcome; nothing opens when the header does not parse as format 2."""
        try:
            header = parse_header(envelope)
            if header is None or header.version != FORMAT_STREAM:
                return None, b""
            context = resolve_context(header, presented)
        except EnvelopeFormatError:
            return None, b""
        body = envelope[len(header.raw) :]
        dk = await self._data_key(header, context)
        chunked = _chunked(dk, header, body, context, seed)
        if _whole(dk, header, body, context) != chunked[0]:
            raise FindingError("the decoder answers differently in chunks and in one piece")
        return chunked

    async def _data_key(self, header: Header, context: bytes) -> DataKey:
        """The DEK the header names, through the real cache and backend; else a wrong one."""
        try:
            key = self._envelopes.registry.get(header.key_name)
            mapping = parse_canonical_context(context)
            return await self._envelopes.deks.for_decrypt(key, header, mapping)
        except BrokerError:
            return _WRONG_KEY

    async def _session(self, envelope: bytes, presented: Mapping[str, str], seed: int) -> Outcome:
        """DecryptStream's use case fed the same input; only the fixed failure may come out."""
        session = DecryptStreamSession(self._envelopes.service, CALLER, presented)
        released = bytearray()
        try:
            for chunk in _chunks(envelope, seed):
                released += await session.feed(chunk)
            released += session.finish()
        except DecryptionFailedError as exc:
            if exc.message != DECRYPTION_FAILED_MESSAGE:
                raise FindingError("DecryptStream failed with another message") from exc
            return None, bytes(released)
        return bytes(released), bytes(released)

    def _check_released(self, envelope: bytes, released: bytes, opened: bytes | None) -> None:
        """Released plaintext is a prefix of its seed's; a whole stream opens only as sealed."""
        if opened is not None:
            seed = self._sealed.get(envelope)
            if seed is None or seed[1] != opened:
                raise FindingError("a stream the seeds did not seal opened")
        if released:
            header = parse_header(envelope)
            sealed = self._by_header.get(header.raw) if header is not None else None
            if sealed is None or not sealed.startswith(released):
                raise FindingError("plaintext no seed sealed at this place was released")


class StreamHarness(Harness):
    """StreamDecryptor and DecryptStreamSession on mutated format 2 envelopes."""

    name = "stream"
    max_len = 16384

    def target(self, work: Path) -> Target:
        """Seal the seeds with the real backend and encryptor; check every input against them."""
        envelopes = Envelopes(work)
        loop = asyncio.new_event_loop()
        sealed = loop.run_until_complete(_seal_all(envelopes))
        checker = _Checker(envelopes, sealed)

        def test_one(data: bytes) -> None:
            if len(data) >= _OPTION_BYTES:
                loop.run_until_complete(checker.run(data))

        seeds = [
            bytes((n % 256, index)) + env for n, (env, (index, _)) in enumerate(sealed.items())
        ]
        return Target(test_one, seeds)


if __name__ == "__main__":
    sys.exit(main(StreamHarness()))
