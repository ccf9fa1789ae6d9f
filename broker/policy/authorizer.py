"""Who is calling, and whether they may use a key for an operation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["OPERATIONS", "Authorizer", "Caller", "SocketAccessAuthorizer"]

OPERATIONS = frozenset(
    {
        "encrypt",
        "decrypt",
        "rewrap",
        "datakey",
        "lease",
        "sign",
        "verify",
        "hmac",
        "hash_password",
        "derive",
        "token",
        "admin",
    }
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity a call was made with, resolved once per call at the transport.

    `kind` says how the transport attested it (`listener`, `peercred`, `spiffe`, `dns`, `cn`);
    `name` is a policy identity's name or the transport's typed name (`listener:NAME`,
    `uid:N`, a SPIFFE ID, `dns:NAME`, `cn:NAME`), so names of two kinds never coincide.
    """

    kind: str
    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)


class Authorizer(Protocol):
    """Decides before any key lookup; raises PermissionDeniedError to deny."""

    def authorize(
        self, caller: Caller, *, key: str, operation: str, context: Mapping[str, str]
    ) -> None:
        """Allow silently, or raise PermissionDeniedError."""
        ...


class SocketAccessAuthorizer:
    """Allows every operation to any caller that can open the listener's socket.

    The access boundary is then the socket file's owner, group and mode (0660 by default):
    whoever the operating system lets connect may use every key. Per-caller policy replaces
    this when configured.
    """

    def authorize(
        self, caller: Caller, *, key: str, operation: str, context: Mapping[str, str]
    ) -> None:
        """Allow: the operating system already checked access to the socket."""
        del caller, key, operation, context
