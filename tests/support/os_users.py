"""Real OS users for tests, and running a small client as one of them."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PEER_CLIENT = Path(__file__).parent / "peer_client.py"


@dataclass(frozen=True)
class OsUser:
    """A real account made for the test run."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class OsUsers:
    """Two users; only `b` belongs to the extra group `group`."""

    a: OsUser
    b: OsUser
    group: str
    gid: int


def user_info(name: str) -> OsUser:
    """The account's uid, gid and groups."""
    out = subprocess.run(["id", "-G", name], check=True, capture_output=True, text=True)
    groups = tuple(int(g) for g in out.stdout.split())
    entry = pwd.getpwnam(name)
    return OsUser(name, entry.pw_uid, entry.pw_gid, groups)


def run_as(user: OsUser, action: str, socket: Path, arg: str) -> dict[str, object]:
    """Run peer_client.py as user (privileges dropped inside the child)."""
    groups = ",".join(str(g) for g in user.groups)
    out = subprocess.run(
        [
            sys.executable,
            str(PEER_CLIENT),
            str(user.uid),
            str(user.gid),
            groups,
            str(socket),
            action,
            arg,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
