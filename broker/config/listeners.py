"""Configuration of listeners (`[[listeners]]`), the policy (`[policy]`) and secret hygiene.

Kept apart from broker/config/schema.py, which calls in here for these sections; errors are one line
naming the field and the fix, like the rest of the configuration.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ConfigError
from broker.policy.loader import load_policy_file, parse_policy
from broker.transport.sockets import SUN_PATH_MAX

__all__ = [
    "LISTENER_KINDS",
    "ListenerConfig",
    "PolicyConfig",
    "TlsConfig",
    "check_secret_file",
    "parse_listeners",
    "parse_policy_section",
]

LISTENER_KINDS = ("unix", "peercred", "tcp")
_FIELDS = {
    "unix": frozenset({"kind", "path", "mode", "owner", "group", "identity"}),
    "peercred": frozenset(
        {"kind", "path", "mode", "owner", "group", "max_connections", "max_connections_per_uid"}
    ),
    "tcp": frozenset({"kind", "address", "tls"}),
}
_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_MAX_CONNECTIONS = 4096  # a peercred listener's defaults; each connection costs 3 fds
_MAX_CONNECTIONS_PER_UID = 256
_PEER_NAME_RESERVE = 48  # "<uid>.<gid>.<pid>.<start>.<n>" for typical values
# setting names that hold secrets: `token`, `vault_token`, `secret_access_key`; not `token_label`
_SECRET_NAMES = re.compile(
    r"(^|_)(token|secret|password|passphrase|pin|private_key|master_key|api_key|access_key"
    r"|secret_id|credentials|dsn)$"
)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server certificate chain, its key, and the CA client certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One `[[listeners]]` entry."""

    kind: str
    path: Path | None = None
    address: str = ""
    mode: int = 0o660
    owner: int | None = None
    group: int | None = None
    identity: str = ""
    tls: TlsConfig | None = None
    max_connections: int = _MAX_CONNECTIONS
    max_connections_per_uid: int = _MAX_CONNECTIONS_PER_UID


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Where the policy lives: its own file, or the `[policy]` table of the config file."""

    file: Path
    table: str | None = None


def _mode(label: str, raw: object) -> int:
    if isinstance(raw, str) and re.fullmatch(r"0?[0-7]{3}", raw):
        return int(raw, 8)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 0o777:  # noqa: PLR2004
        return raw
    raise ConfigError(f'{label}.mode: expected an octal string such as "0660"')


def _owner(label: str, raw: object, *, group: bool) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str) and raw:
        try:
            return grp.getgrnam(raw).gr_gid if group else pwd.getpwnam(raw).pw_uid
        except KeyError:
            what = "group" if group else "user"
            raise ConfigError(f"{label}: no {what} named {raw!r} on this host") from None
    raise ConfigError(f"{label}: expected a name or a number")


def _socket_path(label: str, raw: object, kind: str) -> Path:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{label}.path: a {kind} listener needs a socket path")
    path = Path(raw).expanduser()
    size = len(os.fsencode(path.absolute()))
    if size > SUN_PATH_MAX:
        raise ConfigError(f"{label}.path: longer than {SUN_PATH_MAX} bytes; choose a shorter path")
    if kind == "peercred" and size + 4 + _PEER_NAME_RESERVE > SUN_PATH_MAX:
        raise ConfigError(
            f"{label}.path: too long for a peercred listener (its internal sockets need "
            f"{_PEER_NAME_RESERVE} more bytes); use a path of at most "
            f"{SUN_PATH_MAX - 4 - _PEER_NAME_RESERVE} bytes"
        )
    return path


def _count(label: str, raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    raise ConfigError(f"{label}: expected an integer above 0")


def _connection_caps(label: str, raw: Mapping[str, object]) -> tuple[int, int]:
    """A peercred listener's max_connections and max_connections_per_uid."""
    total = _count(f"{label}.max_connections", raw.get("max_connections", _MAX_CONNECTIONS))
    per_uid = _count(
        f"{label}.max_connections_per_uid",
        raw.get("max_connections_per_uid", min(total, _MAX_CONNECTIONS_PER_UID)),
    )
    if per_uid > total:
        raise ConfigError(f"{label}.max_connections_per_uid: at most max_connections ({total})")
    return total, per_uid


def _tls(label: str, raw: object) -> TlsConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}.tls: a tcp listener needs a [listeners.tls] table")
    paths: dict[str, Path] = {}
    for name in ("cert", "key", "client_ca"):
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{label}.tls.{name}: expected a path to a PEM file")
        paths[name] = Path(value).expanduser()
    extra = sorted(set(raw) - set(paths))
    if extra:
        raise ConfigError(f"{label}.tls.{extra[0]}: unknown setting (known: cert, key, client_ca)")
    return TlsConfig(**paths)


def _listener(label: str, raw: object) -> ListenerConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a table")
    kind = raw.get("kind")
    if kind not in LISTENER_KINDS:
        raise ConfigError(f"{label}.kind: must be one of {', '.join(LISTENER_KINDS)}")
    extra = sorted(set(raw) - _FIELDS[kind])
    if extra:
        raise ConfigError(f"{label}.{extra[0]}: not a setting of {kind} listeners")
    if kind == "tcp":
        address = raw.get("address")
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise ConfigError(f"{label}.address: expected HOST:PORT, such as 127.0.0.1:8443")
        return ListenerConfig(kind, address=address, tls=_tls(label, raw.get("tls")))
    identity = raw.get("identity", "")
    if kind == "unix" and (not isinstance(identity, str) or not _IDENTITY.match(identity)):
        raise ConfigError(f"{label}.identity: a unix listener needs the identity of its callers")
    total, per_uid = _connection_caps(label, raw)
    return ListenerConfig(
        kind,
        path=_socket_path(label, raw.get("path"), kind),
        mode=_mode(label, raw.get("mode", "0660")),
        owner=_owner(f"{label}.owner", raw.get("owner"), group=False),
        group=_owner(f"{label}.group", raw.get("group"), group=True),
        identity=str(identity),
        max_connections=total,
        max_connections_per_uid=per_uid,
    )


def parse_listeners(raw: object, where: str) -> tuple[ListenerConfig, ...]:
    """Validate the `[[listeners]]` array."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"listeners: expected one or more [[listeners]] tables ({where})")
    out: list[ListenerConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        label = f"listeners[{index}]"
        try:
            listener = _listener(label, item)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({where})") from None
        ident = str(listener.path.absolute()) if listener.path else listener.address
        if ident in seen:
            raise ConfigError(f"{label}: {ident} is used by another listener ({where})")
        seen.add(ident)
        out.append(listener)
    return tuple(out)


def parse_policy_section(raw: object, path: Path) -> PolicyConfig:
    """`[policy] file = "…"`, or the policy written inline in the config; validated now."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"policy: expected a table ({path})")
    if "file" in raw:
        file = raw["file"]
        if not isinstance(file, str) or not file or len(raw) != 1:
            raise ConfigError(f"policy.file: expected only a path to a policy file ({path})")
        target = Path(file).expanduser()
        if not target.is_absolute():
            target = path.parent / target
        load_policy_file(target)
        return PolicyConfig(target)
    parse_policy(raw, str(path))
    return PolicyConfig(path, table="policy")


def _secret_fields(data: Mapping[str, object], prefix: str = "") -> list[str]:
    found: list[str] = []
    for name, value in data.items():
        label = f"{prefix}{name}"
        if isinstance(value, Mapping):
            found += _secret_fields(value, f"{label}.")
        elif isinstance(value, str) and value and _SECRET_NAMES.search(name.lower()):
            found.append(label)
    return found


def check_secret_file(path: Path, data: Mapping[str, object]) -> None:
    """Refuse a config file holding secrets that other users can read."""
    secrets = _secret_fields(data)
    mode = path.stat().st_mode & 0o777
    if secrets and mode & 0o077:
        raise ConfigError(
            f"{secrets[0]}: {path} holds secrets and its mode {mode:o} lets other users read "
            f"it; run chmod 600 {path} or pass the secret in the environment"
        )
