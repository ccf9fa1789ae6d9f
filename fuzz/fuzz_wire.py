"""Fuzz the envelope parser (broker/core/wire.py) and the decrypt path that uses it.

An input is: byte 0, which context the caller presents; byte 1, where to cut the envelope for
the prefix check; then the envelope. For every input:

* `parse_header` raises nothing but EnvelopeFormatError, and answers None ("need more bytes")
  only for fewer than MAX_HEADER_SIZE bytes, so a stream reader never buffers more than that;
* a parsed header is the exact start of the input, and encoding its fields again gives the same
  bytes: one encoding per header;
* a prefix of the input is never decided differently from the whole: None, or the same result;
* `EnvelopeService.decrypt` over a real local keyring answers the fixed DecryptionFailedError or
  InvalidRequestError, or opens the envelope; it opens only envelopes the seeds sealed, to the
  plaintext they sealed, and raises nothing.

    .venv/bin/python fuzz/fuzz_wire.py -max_total_time=60
"""

from __future__ import annotations

import asyncio
import struct
import sys
from typing import TYPE_CHECKING

from _harness import FindingError, Harness, Target, instrumented, main

with instrumented():
    from _envelopes import CALLER, CONTEXTS, Envelopes

    from broker.core.wire import (
        FORMAT_V1,
        MAX_HEADER_SIZE,
        EnvelopeFormatError,
        Header,
        encode_prefix,
        parse_header,
    )
    from broker.errors import DECRYPTION_FAILED_MESSAGE, DecryptionFailedError, InvalidRequestError
    from broker.services.envelope import DecryptItem, EncryptItem, Opened, Sealed

if TYPE_CHECKING:
    from pathlib import Path

PLAINTEXTS = (b"", b"4111 1111 1111 1111", bytes(range(256)) * 4)
_OPTION_BYTES = 2


async def _seal_all(envelopes: Envelopes) -> dict[bytes, tuple[int, bytes]]:
    """Envelope -> (index of its context, plaintext), for both keys, stored or not, both formats."""
    sealed: dict[bytes, tuple[int, bytes]] = {}
    for index, context in enumerate(CONTEXTS[:3]):
        for store in (False, True):
            items = [
                EncryptItem(key, plaintext, context, store)
                for key in ("default", "other")
                for plaintext in PLAINTEXTS
            ]
            results = await envelopes.service.encrypt(CALLER, items)
            for item, result in zip(items, results, strict=True):
                if not isinstance(result, Sealed):
                    raise FindingError(f"sealing a seed failed: {result!r}")
                sealed[result.ciphertext] = (index, item.plaintext)
            stream = await envelopes.stream_envelope(context, PLAINTEXTS[2], store=store)
            sealed[stream] = (index, PLAINTEXTS[2])
    return sealed


def _encoded(header: Header) -> bytes:
    """The header's fields encoded again by the writer's own code."""
    prefix = encode_prefix(
        version=header.version,
        key_name=header.key_name,
        key_version=header.key_version,
        wrapped_dek=header.wrapped_dek,
        commitment=header.commitment,
        stored_context=header.stored_context,
    )
    if header.version == FORMAT_V1:
        return prefix + header.nonce
    return prefix + struct.pack(">I", header.segment_size) + header.salt


def _parsed(data: bytes) -> Header | str | None:
    """parse_header's answer, with a format error as its message."""
    try:
        return parse_header(data)
    except EnvelopeFormatError as exc:
        return f"EnvelopeFormatError: {exc}"


def check_header(envelope: bytes, cut: int) -> None:
    """The parser's answer is bounded, exact, canonical, and the same for every longer prefix."""
    whole = _parsed(envelope)
    if whole is None and len(envelope) >= MAX_HEADER_SIZE:
        raise FindingError(f"{len(envelope)} bytes still parse as an incomplete header")
    if isinstance(whole, Header):
        if not envelope.startswith(whole.raw) or len(whole.raw) > MAX_HEADER_SIZE:
            raise FindingError("the parsed header is not the start of the input")
        if _encoded(whole) != whole.raw:
            raise FindingError("the parsed header encodes to other bytes")
    part = _parsed(envelope[: cut * len(envelope) // 256])
    if part is not None and part != whole:
        raise FindingError(f"a prefix parses as {part!r}, the whole input as {whole!r}")


def check_opened(result: object, expected: tuple[int, bytes] | None) -> None:
    """Opened only as sealed; otherwise exactly one of the two refusals decrypt may give."""
    if isinstance(result, Opened):
        if expected is None or result.plaintext != expected[1]:
            raise FindingError("an envelope the seeds did not seal opened")
    elif isinstance(result, DecryptionFailedError):
        if result.message != DECRYPTION_FAILED_MESSAGE:
            raise FindingError(f"decryption failed with another message: {result.message!r}")
    elif not isinstance(result, InvalidRequestError):
        raise FindingError(f"decrypt answered {type(result).__name__}: {result}")


class WireHarness(Harness):
    """parse_header, parse_envelope and the open path, through EnvelopeService.decrypt."""

    name = "wire"
    max_len = 16384

    def target(self, work: Path) -> Target:
        """Seal the seeds with the real service, then check every input against them."""
        envelopes = Envelopes(work)
        loop = asyncio.new_event_loop()
        sealed = loop.run_until_complete(_seal_all(envelopes))

        def test_one(data: bytes) -> None:
            if len(data) < _OPTION_BYTES:
                return
            envelope = data[_OPTION_BYTES:]
            check_header(envelope, data[1])
            item = DecryptItem(envelope, CONTEXTS[data[0] % len(CONTEXTS)])
            (result,) = loop.run_until_complete(envelopes.service.decrypt(CALLER, [item]))
            check_opened(result, sealed.get(envelope))

        seeds = [bytes((index, 0x80)) + env for env, (index, _) in sealed.items()]
        return Target(test_one, seeds)


if __name__ == "__main__":
    sys.exit(main(WireHarness()))
