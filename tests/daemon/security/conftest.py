from __future__ import annotations

import os
import secrets
import subprocess
from typing import TYPE_CHECKING

import pytest
from support.os_users import OsUsers, user_info
from support.secrets_ledger import remember
from support.secure_daemon import DIRS, ConfiguredDaemon, remove, short_dir, stop_all

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MASTER_KEY = secrets.token_hex(32)


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def os_users() -> Iterator[OsUsers]:
    """Two OS users made with useradd (and removed after the session); needs root."""
    if os.geteuid() != 0:
        pytest.skip("creating OS users with useradd needs root; run the suite as root")
    tag = secrets.token_hex(3)
    group, names = f"kbg{tag}", (f"kba{tag}", f"kbb{tag}")
    _sh("groupadd", group)
    try:
        _sh("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", names[0])
        _sh("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", group, names[1])
        import grp  # noqa: PLC0415 - only here

        yield OsUsers(user_info(names[0]), user_info(names[1]), group, grp.getgrnam(group).gr_gid)
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def _cleanup_dirs() -> Iterator[None]:
    """Remove the short directories under /tmp once the whole session is done."""
    remember(MASTER_KEY.encode(), bytes.fromhex(MASTER_KEY))
    yield
    for path in DIRS:
        remove(path)


@pytest.fixture
def configured() -> Iterator[Callable[..., ConfiguredDaemon]]:
    """Factory: a daemon from config text; `{state}`, `{run}` and `{base}` are filled in."""
    made: list[ConfiguredDaemon] = []

    def make(config: str, socket: str = "ops.sock", **fill: object) -> ConfiguredDaemon:
        base = short_dir()
        run = base / "run"
        run.mkdir()
        run.chmod(0o755)
        text = config.format(state=base / "state", run=run, base=base, **fill)
        daemon = ConfiguredDaemon(
            base, text, run / socket, {"ECL_CRYPTO_LOCAL_MASTER_KEY": MASTER_KEY}
        )
        made.append(daemon)
        return daemon

    yield make
    stop_all(made)
