"""`keybroker policy check|explain` and `keybroker audit verify`: offline tools, no daemon."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from broker.audit.checkpoint import find_checkpoint
from broker.audit.log import derive_audit_key
from broker.audit.verify import split_lines, verify
from broker.errors import ConfigError
from broker.policy.authorizer import OPERATIONS, Caller
from broker.policy.engine import decide
from broker.policy.loader import check_callers, listener_patterns, load_policy_file
from broker.policy.model import name_kind, transport_name

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from broker.audit.checkpoint import Checkpoint
    from broker.audit.verify import Line, VerifyReport
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
    explain.add_argument(
        "--caller", required=True, help="identity name, or a typed name: uid:N, cn:NAME, …"
    )
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
    verify.add_argument(
        "--allow-restart",
        type=int,
        action="append",
        default=[],
        metavar="SEQ",
        help="accept the chain restart that follows record SEQ (repeatable)",
    )
    verify.add_argument(
        "--checkpoint",
        metavar="FILE_OR_VALUE",
        help="an audit_checkpoint the files must reach: its JSON, or a file holding it "
        "(the checkpoint file, or the daemon's JSON log: the last one counts)",
    )


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


def _load(path: Path) -> tuple[Policy, Mapping[str, object] | None]:
    """A policy file, or the policy a config file holds or points to, and that config's table."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    section = data.get("policy")
    if not isinstance(section, dict):
        return load_policy_file(path), None
    target = section.get("file")
    if isinstance(target, str):
        return load_policy_file(path.parent / Path(target).expanduser()), data
    return load_policy_file(path, "policy"), data


def _unix_identities(config: Mapping[str, object]) -> list[str]:
    """The identities of a config file's unix listeners, as `serve` finds them."""
    from broker.config.listeners import ListenerConfig  # noqa: PLC0415 - only config files need it
    from broker.daemon.security import unix_identities  # noqa: PLC0415 - idem

    raw = config.get("listeners")
    tables = [t for t in raw if isinstance(t, dict)] if isinstance(raw, list) else []
    return unix_identities(
        ListenerConfig(str(t.get("kind")), identity=str(t.get("identity", ""))) for t in tables
    )


def _check(path: Path) -> int:
    """Validate as `serve` does; for a lone policy file, say which names it leaves to listeners."""
    policy, config = _load(path)
    if config is not None:
        check_callers(policy, _unix_identities(config))
    counts = f"{len(policy.identities)} identities, {len(policy.rules)} rules"
    _say(f"{path}: ok ({counts}, {len(policy.limits)} limits)")
    left = listener_patterns(policy) if config is None else []
    if left:
        names = ", ".join(f'"{p}"' for p in dict.fromkeys(left))
        _say(f"note: {names} name no identity here; serve takes them for unix listeners")
    return 0


def _explain(args: argparse.Namespace) -> int:
    policy, _ = _load(args.policy)
    name = args.caller
    if name_kind(name) is None and name not in policy.identity_names:
        name = transport_name("listener", name)  # how serve names that unix listener's callers
    attributes: dict[str, str] = {}
    for identity in policy.identities:
        if identity.name == name:
            attributes.update(identity.attributes)
    attributes.update(_pairs(args.attr, "--attr"))
    caller = Caller(kind="explain", name=name, attributes=attributes)
    context = _pairs(args.context, "--context")
    decision = decide(policy, caller, args.key, args.op, context)
    verdict = "allow" if decision.allowed else "deny"
    _say(f"{verdict} (rule {decision.rule_id}): {name} {args.op} {args.key} {context}")
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

        keys = LocalKeys(load_config(args.config, keys_required=False), create_root=False)
        try:
            return keys.root_key()
        finally:
            keys.close()
    path = (args.state_dir or Path(".keybroker")) / "master.key"
    if not path.exists():
        raise ConfigError(f"{path}: no master key; pass --state-dir or --config of the daemon")
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def _checkpoint(given: str) -> Checkpoint:
    """The checkpoint --checkpoint names: a JSON value, or the last one in a file."""
    if given.lstrip().startswith("{"):
        text = given
    else:
        try:
            text = Path(given).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"--checkpoint {given}: cannot read ({exc.strerror})") from None
    checkpoint = find_checkpoint(text)
    if checkpoint is None:
        raise ConfigError("--checkpoint: no audit_checkpoint found in the value or file given")
    return checkpoint


def _where(files: list[Path], lines: list[Line], number: int) -> str:
    """`FILE:LINE` of a line given by its 1-based position among all lines (0: the end)."""
    if not number:
        return str(files[-1])
    line = lines[number - 1]
    return f"{files[line.file]}:{line.number}"


def _notes(files: list[Path], lines: list[Line], report: VerifyReport) -> None:
    """What a passing check should still tell: repairs, a partial start, restarts, anchor."""
    for repair in report.repairs:
        by = lines[repair.record_line - 1].number
        _say(
            f"note: {_where(files, lines, repair.line)}: a write cut short ({repair.length} "
            f"bytes at byte {repair.offset}) was repaired by the audit_repair record on line {by}"
        )
    if report.starts_at:
        _say(f"note: starts at seq {report.starts_at}; pass the earlier files to check the link")
    if report.restarts:
        _say(f"note: the chain restarted {report.restarts} time(s), as --allow-restart allows")
    if report.checkpoint is not None:
        cp = report.checkpoint
        _say(f"note: reaches the checkpoint of {cp.time} (seq {cp.seq})")


def _verify(args: argparse.Namespace) -> int:
    checkpoint = _checkpoint(args.checkpoint) if args.checkpoint else None
    key = derive_audit_key(_root_key(args))
    lines: list[Line] = []
    for index, path in enumerate(args.files):
        lines += split_lines(path.read_bytes(), index)
    report = verify(key, lines, allow_restarts=set(args.allow_restart), checkpoint=checkpoint)
    if not report.ok:
        _say(f"{_where(args.files, lines, report.line)}: {report.problem}")
        return 1
    head = report.head
    span = f"seq {report.starts_at}..{head.seq}" if head else "empty"
    _say(f"ok: {report.records} records, {span}, head mac {head.mac if head else '-'}")
    _notes(args.files, lines, report)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch `policy …` and `audit …`."""
    if args.command == "audit":
        return _verify(args)
    if args.policy_command == "explain":
        return _explain(args)
    return _check(args.file)
