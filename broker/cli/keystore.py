"""`keybroker keystore init | migrate | copy`: prepare a store and move keys between stores."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from broker.errors import ConfigError

if TYPE_CHECKING:
    import argparse

    from broker.config import Config

__all__ = ["add_parsers", "run"]

_KINDS = ("file", "postgres")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `keystore` and its commands."""
    keystore = sub.add_parser("keystore", help="key store tools (schema, copies between stores)")
    commands = keystore.add_subparsers(dest="keystore_command", required=True)
    for name, helptext in (
        ("init", "create the PostgreSQL schema (idempotent)"),
        ("migrate", "upgrade the PostgreSQL schema to this release's version"),
    ):
        cmd = commands.add_parser(name, help=helptext)
        cmd.add_argument("--config", type=Path, required=True, help="the daemon's TOML file")
    copy = commands.add_parser("copy", help="copy every key and version to another store")
    copy.add_argument("--from", dest="source", choices=_KINDS, required=True)
    copy.add_argument("--to", dest="target", choices=_KINDS, required=True)
    copy.add_argument("--config", type=Path, required=True, help="the daemon's TOML file")


def _say(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 - a command line reports on stderr


def _config(args: argparse.Namespace) -> Config:
    from broker.config.load import load_config  # noqa: PLC0415 - only these commands need it

    return load_config(args.config, keys_required=False)


def _schema(cfg: Config, *, migrate: bool) -> int:
    if cfg.keystore.kind == "file":
        _say("keystore.kind = file: the keyring file needs no schema; nothing to do")
        return 0
    from broker.keystore.postgres import (  # noqa: PLC0415 - only fleets need the driver
        init_schema,
        migrate_schema,
        postgres_settings,
    )

    settings = postgres_settings(cfg.keystore.postgres)
    version, where = (migrate_schema if migrate else init_schema)(settings)
    _say(f"{where}: key store schema version {version}")
    return 0


def _copy(cfg: Config, source: str, target: str) -> int:
    from broker.daemon.keystore import LocalKeys  # noqa: PLC0415 - heavy imports only here

    if source == target:
        raise ConfigError("keystore copy: --from and --to name the same store")

    def end(kind: str, *, create_root: bool) -> LocalKeys:
        return LocalKeys(
            replace(cfg, keystore=replace(cfg.keystore, kind=kind)), create_root=create_root
        )

    ends = [end(source, create_root=False), end(target, create_root=True)]
    try:
        src, dst = (end.keyring() for end in ends)
        names = src.names()
        copied = 0
        for number, name in enumerate(names, start=1):
            fresh = src.copy_to(dst, name)
            copied += fresh
            done = "copied" if fresh else "already there"
            versions = len(src.versions(name))
            _say(f"[{number}/{len(names)}] {name}: {versions} version(s), {done}")
        _say(f"{copied} of {len(names)} keys copied from {source} to {target}")
        return 0
    finally:
        for opened in ends:
            opened.close()


def run(args: argparse.Namespace) -> int:
    """Dispatch `keystore …`."""
    cfg = _config(args)
    if args.keystore_command == "copy":
        return _copy(cfg, args.source, args.target)
    return _schema(cfg, migrate=args.keystore_command == "migrate")
