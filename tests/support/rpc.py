"""Helpers for asserting on failed gRPC calls in API tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable


def reason(exc: grpc.RpcError) -> str:
    """The broker's machine-readable reason from the trailing metadata."""
    return dict(exc.trailing_metadata() or ()).get("keybroker-error-reason", "")


def rpc_error(call: Callable[[object], object], request: object) -> grpc.RpcError:
    """Call and return the error it must raise."""
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value


def assert_fails(
    call: Callable[[object], object],
    request: object,
    code: grpc.StatusCode,
    reason_word: str | None = None,
    message: str | None = None,
) -> grpc.RpcError:
    """Assert the call fails with the code (and reason and message substring, when given)."""
    exc = rpc_error(call, request)
    assert exc.code() == code, (exc.code(), exc.details())
    if reason_word is not None:
        assert reason(exc) == reason_word
    if message is not None:
        assert message in (exc.details() or ""), exc.details()
    return exc
