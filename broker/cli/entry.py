"""The `keybroker` command line: serve, encrypt, decrypt, healthcheck, config check."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from broker import __version__
from broker.cli import keystore as cli_keystore
from broker.cli import security as cli_security
from broker.config.validate import config_warnings, describe_keys, validated_config
from broker.errors import BrokerError, ConfigError

__all__ = ["main"]


def _context(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--context {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _warn(lines: list[str]) -> None:
    """Report settings that are set but ignored; they never change the exit code."""
    for line in lines:
        print(f"keybroker: warning: {line}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keybroker", description="Local key-broker daemon.")
    p.add_argument("--version", action="version", version=f"keybroker {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--dev", action="store_true", help="local backend, state in ./.keybroker")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--state-dir", type=Path, help="state directory (keyring, socket in dev)")
    serve.add_argument("--socket", type=Path, help="Unix socket path")
    for name, helptext in (("encrypt", "stdin → envelope"), ("decrypt", "envelope → stdout")):
        op = sub.add_parser(name, help=helptext)
        op.add_argument("--socket", help="daemon socket (default: KEYBROKER_SOCKET)")
        op.add_argument("--context", action="append", default=[], metavar="NAME=VALUE")
        op.add_argument("--binary", action="store_true", help="raw bytes instead of base64 text")
        op.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
        if name == "encrypt":
            op.add_argument("--key", default="default", help="logical key (default: default)")
            op.add_argument("--store-context", action="store_true", help="store the context")
    health = sub.add_parser("healthcheck", help="exit 0 when the daemon is SERVING")
    health.add_argument("--socket", help="daemon socket (default: KEYBROKER_SOCKET)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.add_argument(
        "--deep",
        action="store_true",
        help="one line per component (KMS backends, key store, services); exit 0 only when "
        "all are SERVING",
    )
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument(
        "file", type=Path, nargs="?", help="TOML file (default: the environment's seed names)"
    )
    cli_security.add_parsers(sub)
    cli_keystore.add_parsers(sub)
    return p


def _run(args: argparse.Namespace) -> int:
    from broker.cli import ops as cli_ops  # noqa: PLC0415 - keeps `serve` start-up free of client code

    if args.command == "serve":
        from broker.daemon.app import serve  # noqa: PLC0415 - heavy imports only for serve

        _warn(config_warnings(args.config))
        cfg = validated_config(
            args.config, dev=args.dev, state_dir=args.state_dir, socket=args.socket
        )
        return asyncio.run(serve(cfg))
    if args.command in ("policy", "audit"):
        return cli_security.run(args)
    if args.command == "keystore":
        return cli_keystore.run(args)
    if args.command == "config":
        _warn(config_warnings(args.file))
        cfg = validated_config(args.file)
        source = args.file or "environment"
        print(f"{source}: ok ({len(cfg.keys)} keys, socket {cfg.server.socket})")
        for line in describe_keys(cfg):
            print(f"  {line}")
        return 0
    socket = cli_ops.client_socket(args.socket)
    if args.command == "healthcheck":
        return cli_ops.healthcheck(socket, args.timeout, deep=args.deep)
    ctx = _context(args.context)
    if args.command == "encrypt":
        cli_ops.encrypt(
            socket,
            args.key,
            ctx,
            store=args.store_context,
            binary=args.binary,
            timeout=args.timeout,
        )
    else:
        cli_ops.decrypt(socket, ctx, binary=args.binary, timeout=args.timeout)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keybroker` console script."""
    from broker.cli.ops import CliError  # noqa: PLC0415 - see _run

    args = _parser().parse_args(argv)
    if args.command != "serve":
        # Tools print their results on stdout; what they log (warnings) stays on stderr.
        from broker.daemon.logs import configure_logging  # noqa: PLC0415 - see _run

        configure_logging("warning", cache=False)
    try:
        return _run(args)
    except (ConfigError, CliError, BrokerError) as exc:
        print(f"keybroker: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
