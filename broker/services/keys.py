"""The logical keys the broker serves and the backend each maps to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.core.wire import validate_key_name
from broker.errors import InvalidRequestError, KeyNotFoundError, WrongKeyPurposeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from broker.kms.base import KmsBackend

__all__ = ["KeyRegistry", "ResolvedKey", "check_key_name"]


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """A logical key bound to its backend and backend key id."""

    name: str
    uri: str
    purpose: str
    backend: KmsBackend
    key_id: str


def check_key_name(name: str) -> str:
    """Reject malformed key names before authorization (format only; reveals nothing)."""
    try:
        return validate_key_name(name)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None


class KeyRegistry:
    """Looks up logical keys; call only after the caller was authorized for the name."""

    def __init__(self, keys: Mapping[str, ResolvedKey]) -> None:
        """Serve a fixed set of keys (from configuration)."""
        self._keys = dict(keys)

    def get(self, name: str, purpose: str | None = "envelope") -> ResolvedKey:
        """The key, or KeyNotFoundError; WrongKeyPurposeError when it serves another purpose."""
        key = self._keys.get(name)
        if key is None:
            raise KeyNotFoundError
        if purpose is not None and key.purpose != purpose:
            raise WrongKeyPurposeError
        return key

    def names(self) -> list[str]:
        """All logical key names, sorted."""
        return sorted(self._keys)
