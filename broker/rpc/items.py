"""Conversions shared by the key-operation servicers: unary results and batch item results."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from broker.errors import BrokerError
from broker.rpc.convert import item_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["item_results", "only"]

T = TypeVar("T")
M = TypeVar("M")


def only(results: Sequence[T | BrokerError]) -> T:
    """The single result of a batch of one, raising its error."""
    (result,) = results
    if isinstance(result, BrokerError):
        raise result
    return result


def item_results(
    results: Sequence[T | BrokerError], make: Callable[..., M], convert: Callable[[T], object]
) -> list[M]:
    """One `…BatchResult` per item: `response=convert(result)` or `error=ItemError`."""
    return [
        make(error=item_error(r)) if isinstance(r, BrokerError) else make(response=convert(r))
        for r in results
    ]
