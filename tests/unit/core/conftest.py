"""Shared helpers for the core tests."""

import pytest

from broker.core.stream import open_stream
from broker.core.wire import FORMAT_V1, open_v1, parse_envelope, resolve_context


def _open_envelope(dk, envelope, presented):
    """Open an envelope of any version the way Decrypt does: parse, resolve, open."""
    header, body = parse_envelope(envelope)
    context = resolve_context(header, presented)
    if header.version == FORMAT_V1:
        return open_v1(dk, header, body, context)
    return open_stream(dk, header, body, context)


@pytest.fixture(scope="session")
def open_envelope():
    """The Decrypt pipeline as one function: parse, resolve the context, open."""
    return _open_envelope
