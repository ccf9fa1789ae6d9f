"""`keybroker policy check|explain` and `keybroker audit verify`: offline tools, no daemon."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from broker.audit.chain import verify_lines
from broker.audit.log import derive_audit_key
from broker.errors import ConfigError
from broker.policy.authorizer import OPERATIONS, Caller
from broker.policy.engine import decide
from broker.policy.loader import load_policy_file

if TYPE_CHECKING:
    import argparse

    from broker.policy.model import Policy

__all__ = ["add_parsers", "run"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `policy` and `audit` commands."""
    policy = sub.add_parser("policy", help="check a policy or explain a decision")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file (or a config's [policy])")
    check.add_argument("file", type=Path)
    explain = psub.add_parser("explain", help="print the decision and the rule that made it")
    explain.add_argument("--policy", type=Path, required=True, help="policy or config file")
    explain.add_argument("--caller", required=True, help="identity name")
    explain.add_argument("--key", required=True)
    explain.add_argument("--op", required=True, choices=sorted(OPERATIONS))
    explain.add_argument("--context", action="append", default=[], metavar="NAME=VALUE")
    explain.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE")
    audit = sub.add_parser("audit", help="audit log tools")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    verify = asub.add_parser("verify", help="check the HMAC chain of audit files, in order")
    verify.add_argument("files", type=Path, nargs="+")
    where = verify.add_mutually_exclusive_group()
    where.add_argument("--state-dir", type=Path, help="state dir holding master.key")
    where.add_argument("--config", type=Path, help="daemon config (its server.state_dir)")


def _say(line: str) -> None:
    """A command line prints its results."""
    sys.stdout.write(line + "\n")


def _pairs(pairs: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"{flag} {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _load(path: Path) -> Policy:
    """A policy file, or the policy a config file holds or points to."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    section = data.get("policy")
    if not isinstance(section, dict):
        return load_policy_file(path)
    target = section.get("file")
    if isinstance(target, str):
        return load_policy_file(path.parent / Path(target).expanduser())
    return load_policy_file(path, "policy")


def _explain(args: argparse.Namespace) -> int:
    policy = _load(args.policy)
    attributes: dict[str, str] = {}
    for identity in policy.identities:
        if identity.name == args.caller:
            attributes.update(identity.attributes)
    attributes.update(_pairs(args.attr, "--attr"))
    caller = Caller(kind="explain", name=args.caller, attributes=attributes)
    context = _pairs(args.context, "--context")
    decision = decide(policy, caller, args.key, args.op, context)
    verdict = "allow" if decision.allowed else "deny"
    _say(f"{verdict} (rule {decision.rule_id}): {args.caller} {args.op} {args.key} {context}")
    return 0 if decision.allowed else 1


def _root_key(args: argparse.Namespace) -> bytes:
    """The root key, read only: never created by a verifier.

    With --config it is found the way the daemon finds it (master.key, master.key.wrapped
    and its KMS key, or the shared store's wrapped root); else from the env or --state-dir.
    """
    master = os.environ.get("ECL_CRYPTO_LOCAL_MASTER_KEY")
    if master:
        return bytes.fromhex(master.strip())
    if args.config is not None:
        from broker.config.load import load_config  # noqa: PLC0415 - only this path needs it
        from broker.daemon.keystore import LocalKeys  # noqa: PLC0415 - idem

        keys = LocalKeys(load_config(args.config), create_root=False)
        try:
            return keys.root_key()
        finally:
            keys.close()
    path = (args.state_dir or Path(".keybroker")) / "master.key"
    if not path.exists():
        raise ConfigError(f"{path}: no master key; pass --state-dir or --config of the daemon")
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def _verify(args: argparse.Namespace) -> int:
    key = derive_audit_key(_root_key(args))
    lines: list[bytes] = []
    origin: list[tuple[Path, int]] = []
    for path in args.files:
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            lines.append(line)
            origin.append((path, number))
    report = verify_lines(key, lines)
    if not report.ok:
        path, number = origin[report.line - 1]
        _say(f"{path}:{number}: {report.problem}")
        return 1
    head = report.head
    span = f"seq {report.starts_at}..{head.seq}" if head else "empty"
    _say(f"ok: {report.records} records, {span}, head mac {head.mac if head else '-'}")
    if report.starts_at:
        _say(f"note: starts at seq {report.starts_at}; pass the earlier files to check the link")
    if report.restarts:
        _say(f"note: the chain restarted {report.restarts} time(s) (see docs/audit.md)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch `policy …` and `audit …`."""
    if args.command == "audit":
        return _verify(args)
    if args.policy_command == "explain":
        return _explain(args)
    policy = _load(args.file)
    counts = f"{len(policy.identities)} identities, {len(policy.rules)} rules"
    _say(f"{args.file}: ok ({counts}, {len(policy.limits)} limits)")
    return 0
