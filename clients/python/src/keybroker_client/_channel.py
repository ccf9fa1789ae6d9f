"""Where the daemon listens and how channels to it are configured.

Resolution order: an explicit ``socket=`` argument, then ``KEYBROKER_SOCKET``, then the dev
socket ``./.keybroker/keybroker.sock`` when it exists, then the system socket
``/run/keybroker/keybroker.sock``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ._errors import InvalidParameterError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "DEV_SOCKET",
    "SOCKET_ENV",
    "SYSTEM_SOCKET",
    "check_timeout",
    "resolve_socket",
    "target_for",
]

SOCKET_ENV: Final = "KEYBROKER_SOCKET"
DEV_SOCKET: Final = Path(".keybroker") / "keybroker.sock"
SYSTEM_SOCKET: Final = Path("/run/keybroker/keybroker.sock")
DEFAULT_TIMEOUT: Final = 10.0

# The daemon accepts up to 4 MiB of plaintext per unary call by default; 64 MiB leaves room
# for a raised daemon limit, batches and envelope overhead without a client-side refusal.
_MAX_MESSAGE: Final = 64 * 1024 * 1024
CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
)

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH: Final = 107


def _strip_scheme(value: str) -> str:
    """Accept ``unix:PATH`` and ``unix://PATH`` too, since users copy gRPC targets around."""
    for prefix in ("unix://", "unix:"):
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def resolve_socket(
    socket: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """Return the absolute socket path the client should dial, following the documented order."""
    env = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else cwd
    if socket is not None:
        chosen = Path(_strip_scheme(os.fspath(socket)))
    elif env.get(SOCKET_ENV):
        chosen = Path(_strip_scheme(env[SOCKET_ENV]))
    elif (base / DEV_SOCKET).exists():
        chosen = DEV_SOCKET
    else:
        chosen = SYSTEM_SOCKET
    path = chosen if chosen.is_absolute() else base / chosen
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise InvalidParameterError(
            f"socket path {path} is {len(os.fsencode(path))} bytes; "
            f"Unix sockets allow at most {_MAX_SOCKET_PATH}"
        )
    return path


def target_for(path: Path) -> str:
    """Build the gRPC target string for a Unix socket path."""
    return f"unix:{path}"


def check_timeout(timeout: float | None, default: float) -> float:
    """Return the deadline in seconds for one call: the call's own, else the client's default."""
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds")
    if not timeout > 0:
        raise InvalidParameterError(f"timeout must be positive, got {timeout}")
    return float(timeout)
