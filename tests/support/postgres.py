"""A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl`, run as an unprivileged user.

The cluster lives in a private directory under /tmp, listens on 127.0.0.1 on a free port
(password authentication, SCRAM, for the test role) and on a private socket directory (trust,
for the superuser the tests administer it with). initdb refuses to run as root, so when the
tests run as root the server runs as the Debian `postgres` account, or one made with useradd.

    server = PostgresServer.create(); server.start(); ...; server.destroy()

The `postgres` fixture makes one server per session and always stops it; `pg_database` gives
each test a fresh database owned by the test role.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Iterator

INSTALL_HINT = "PostgreSQL is missing: run scripts/install-postgres.sh (Debian package postgresql)"
ROLE = "keybroker"
SUPERUSER = "kbadmin"
SERVICE_USER = "keybroker-pg"  # made only when neither the tests' user nor `postgres` fits
_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
max_connections = 80
shared_buffers = 16MB
fsync = off                 # the tests kill processes, not the machine: data stays in the OS
full_page_writes = off
synchronous_commit = on     # an acknowledged commit must survive `pg_ctl stop -m immediate`
log_min_messages = warning
"""


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: from PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_account() -> pwd.struct_passwd | None:
    """Who runs the server: None (this process's user) unless the tests run as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "-M", "-U", "-s", "/usr/sbin/nologin", SERVICE_USER],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pwd.getpwnam(SERVICE_USER)


@dataclass(frozen=True)
class PgDatabase:
    """One database on the test server, owned by the test role."""

    name: str
    dsn: str
    server: PostgresServer


class PostgresServer:
    """One throwaway cluster: start, stop (fast or immediate), restart, DSNs, administration."""

    def __init__(self, bindir: Path, root: Path, account: pwd.struct_passwd | None) -> None:
        """Use `create`; this constructor takes a prepared directory."""
        self.bindir = bindir
        self.root = root
        self.account = account
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)

    @classmethod
    def create(cls) -> PostgresServer:
        """Run initdb in a new private directory; fails the test with the install hint if absent."""
        bindir = find_bindir()
        if bindir is None or not (bindir / "pg_ctl").exists():
            pytest.fail(INSTALL_HINT)
        account = _service_account()
        root = Path(tempfile.mkdtemp(prefix="keybroker-pg-", dir="/tmp"))
        server = cls(bindir, root, account)
        server.sockets.mkdir(mode=0o700)
        if account is not None:
            for path in (root, server.sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        server._run(
            "initdb",
            "-D",
            str(server.data),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        with (server.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(_CONF.format(port=server.port, sockets=server.sockets))
        return server

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" ends sessions cleanly, "immediate" is a crash (recovery next)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def crash(self, timeout: float = 30.0) -> None:
        """Stop at once as `stop("immediate")` does (SIGQUIT to the postmaster), without a fork.

        Tests with gRPC calls in flight use it: forking then is unreliable in grpc-python.
        """
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        pytest.fail(f"the PostgreSQL postmaster {pid} did not stop within {timeout} s")

    def restart(self) -> None:
        """Start again after a stop (crash recovery runs first after an immediate stop)."""
        if self.running:
            self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        status = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return status.returncode == 0

    def dsn(self, dbname: str, *, password: str | None = None) -> str:
        """A libpq DSN for the test role over TCP (password authentication)."""
        secret = self.password if password is None else password
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={ROLE} password={secret}"

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[psycopg.Connection]:
        """A superuser connection over the private socket (autocommit)."""
        with psycopg.connect(
            host=str(self.sockets), port=self.port, user=SUPERUSER, dbname=dbname, autocommit=True
        ) as conn:
            yield conn

    def create_role(self) -> None:
        """The test role, which logs in over TCP with its password."""
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(self.password)
                )
            )

    def create_database(self) -> PgDatabase:
        """A fresh, empty database owned by the test role."""
        name = f"kb_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(ROLE)
                )
            )
        return PgDatabase(name, self.dsn(name), self)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def destroy(self) -> None:
        """Stop the server if it runs (immediately: its data is thrown away) and delete it all."""
        try:
            if self.data.exists() and self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs as the service account, in the cluster directory."""
        out = subprocess.run(
            [str(self.bindir / program), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=None if self.account is None else self.account.pw_uid,
            group=None if self.account is None else self.account.pw_gid,
            extra_groups=None if self.account is None else [],
        )
        if check and out.returncode != 0:
            pytest.fail(f"{program} {' '.join(args)} failed: {out.stderr or out.stdout}")
        return out


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session, with the test role; always stopped at the end."""
    server = PostgresServer.create()
    try:
        server.start()
        server.create_role()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[PgDatabase]:
    """A fresh database for one test, dropped afterwards (restarting a server a test stopped)."""
    database = postgres.create_database()
    try:
        yield database
    finally:
        if not postgres.running:
            postgres.start()
        postgres.drop_database(database.name)
