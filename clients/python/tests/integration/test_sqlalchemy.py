"""keybroker_client.sqlalchemy against a real daemon, on a real PostgreSQL and on SQLite.

The daemon runs in dev mode (keys `default` and `hmac`) with metrics, so tests count the
RPCs a flush or a query makes through `keybroker_rpc_total`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import String, create_engine, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from support.daemon import Daemon
from support.postgres import ROLE, PostgresServer

import keybroker_client
from keybroker_client.sqlalchemy import BlindIndexColumn, EncryptedColumn, blind_index_filter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

DOCS = Path(__file__).resolve().parents[4] / "docs" / "clients" / "python.md"


def email_context(row: Patient) -> dict[str, str]:
    """The context every email envelope is bound to: its tenant and its column."""
    return {"tenant": row.tenant, "field": "patients.email"}


class Base(DeclarativeBase):
    """Declarative base of the test tables."""


class Patient(Base):
    """A row with an encrypted text column, its blind index and an encrypted bytes column."""

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(40))
    email: Mapped[str] = mapped_column(EncryptedColumn(context=email_context))
    email_idx: Mapped[bytes | None] = mapped_column(
        BlindIndexColumn(of="email", key="hmac", tenant=lambda row: row.tenant), index=True
    )
    scan: Mapped[bytes | None] = mapped_column(
        EncryptedColumn(context=lambda row: {"tenant": row.tenant}, text=False)
    )


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """A dev daemon with metrics, for this module."""
    with Daemon() as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[keybroker_client.Client]:
    """A client of that daemon."""
    with keybroker_client.Client(daemon.socket) as kb:
        yield kb


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[URL]:
    """A database on a throwaway PostgreSQL cluster, as a SQLAlchemy URL (psycopg 3)."""
    server = PostgresServer.create()
    try:
        server.start()
        server.create_role()
        database = server.create_database()
        yield URL.create(
            "postgresql+psycopg",
            username=ROLE,
            password=server.password,
            host="127.0.0.1",
            port=server.port,
            database=database.name,
        )
    finally:
        server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh `patients` table on SQLite (a temp file) or PostgreSQL."""
    if request.param == "sqlite":
        url: str | URL = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = create_engine(url)
    Base.metadata.drop_all(db)
    Base.metadata.create_all(db)
    try:
        yield db
    finally:
        Base.metadata.drop_all(db)
        db.dispose()


@pytest.fixture
def session(engine: Engine, client: keybroker_client.Client) -> Iterator[Session]:
    """A session on that table with the keybroker events installed."""
    with _session(engine, client) as first:
        yield first


def _session(engine: Engine, client: keybroker_client.Client) -> Session:
    """A new session with the keybroker events installed."""
    from keybroker_client.sqlalchemy import install  # noqa: PLC0415 - beside its use

    new = Session(engine)
    install(new, client)
    return new


def _rpcs(daemon: Daemon, method: str) -> float:
    """How many calls of an RPC method the daemon has answered OK."""
    return daemon.metric("keybroker_rpc_total", method=method, code="OK")


def _raw(engine: Engine, column: str) -> dict[int, bytes]:
    """A column as stored, by row id."""
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, {column} FROM patients"))  # noqa: S608 - test's own
        return {row[0]: bytes(row[1]) for row in rows}


class TestEncryptedColumn:
    """Values are sealed per tenant on flush and opened on load."""

    def test_round_trip_stores_envelopes_bound_to_the_tenant(self, session, engine, client):
        """The table holds broker envelopes (never the plaintext) that open with the context."""
        session.add_all(
            [
                Patient(id=1, tenant="acme", email="ann@acme.test", scan=b"\x00scan-a"),
                Patient(id=2, tenant="globex", email="bob@globex.test", scan=None),
            ]
        )
        session.commit()
        stored = _raw(engine, "email")
        assert b"ann@acme.test" not in stored[1]
        assert b"bob@globex.test" not in stored[2]
        context = {"tenant": "acme", "field": "patients.email"}
        assert client.decrypt(stored[1], context=context) == b"ann@acme.test"
        with _session(engine, client) as fresh:
            rows = {p.id: p for p in fresh.scalars(select(Patient))}
        assert (rows[1].email, rows[1].scan) == ("ann@acme.test", b"\x00scan-a")
        assert (rows[2].email, rows[2].scan) == ("bob@globex.test", None)

    def test_flushed_objects_keep_plaintext_and_reload_after_commit(self, session):
        """After flush and commit (which expires them) the attributes read as plaintext."""
        patient = Patient(id=1, tenant="acme", email="ann@acme.test")
        session.add(patient)
        session.flush()
        assert patient.email == "ann@acme.test"
        assert not session.is_modified(patient)
        session.commit()
        assert patient.email == "ann@acme.test"

    def test_a_flush_of_100_objects_is_one_encrypt_batch(self, session, engine, client, daemon):
        """One EncryptBatch and one BlindIndexBatch per flush; one DecryptBatch per query."""
        before = {m: _rpcs(daemon, m) for m in ("EncryptBatch", "BlindIndexBatch", "Encrypt")}
        session.add_all(Patient(id=i, tenant="acme", email=f"p{i}@acme.test") for i in range(100))
        session.commit()
        assert _rpcs(daemon, "EncryptBatch") == before["EncryptBatch"] + 1
        assert _rpcs(daemon, "BlindIndexBatch") == before["BlindIndexBatch"] + 1
        assert _rpcs(daemon, "Encrypt") == before["Encrypt"]
        opened = _rpcs(daemon, "DecryptBatch")
        with _session(engine, client) as fresh:
            emails = {p.id: p.email for p in fresh.scalars(select(Patient))}
        assert emails == {i: f"p{i}@acme.test" for i in range(100)}
        assert _rpcs(daemon, "DecryptBatch") == opened + 1

    def test_a_row_moved_to_another_tenant_does_not_open(self, session, engine, client):
        """Changing the tenant behind the ORM's back makes the load raise DecryptionError."""
        session.add(Patient(id=1, tenant="acme", email="ann@acme.test"))
        session.commit()
        with engine.begin() as conn:
            conn.execute(update(Patient).values(tenant="globex"))
        with _session(engine, client) as fresh, pytest.raises(keybroker_client.DecryptionError):
            fresh.scalars(select(Patient)).all()

    def test_an_envelope_copied_from_another_tenant_does_not_open(self, session, engine, client):
        """Another tenant's envelope pasted into a row fails instead of leaking its value."""
        session.add_all(
            [
                Patient(id=1, tenant="acme", email="ann@acme.test"),
                Patient(id=2, tenant="globex", email="bob@globex.test"),
            ]
        )
        session.commit()
        foreign = _raw(engine, "email")[2]
        with engine.begin() as conn:
            conn.execute(text("UPDATE patients SET email = :e WHERE id = 1"), {"e": foreign})
        with _session(engine, client) as fresh, pytest.raises(keybroker_client.DecryptionError):
            fresh.get(Patient, 1)

    def test_tampered_envelope_does_not_open(self, session, engine, client):
        """One flipped byte in the stored envelope raises DecryptionError."""
        session.add(Patient(id=1, tenant="acme", email="ann@acme.test"))
        session.commit()
        damaged = bytearray(_raw(engine, "email")[1])
        damaged[-1] ^= 1
        with engine.begin() as conn:
            conn.execute(text("UPDATE patients SET email = :e"), {"e": bytes(damaged)})
        with _session(engine, client) as fresh, pytest.raises(keybroker_client.DecryptionError):
            fresh.scalars(select(Patient)).all()

    def test_a_tenant_change_through_the_orm_reseals(self, session, engine, client):
        """Moving a row with the ORM seals its values again under the new tenant's context."""
        session.add(Patient(id=1, tenant="acme", email="ann@acme.test"))
        session.commit()
        session.get(Patient, 1).tenant = "globex"
        session.commit()
        with _session(engine, client) as fresh:
            assert fresh.get(Patient, 1).email == "ann@acme.test"

    def test_an_uninstalled_session_cannot_write_plaintext(self, engine):
        """Without the events, the flush fails and nothing reaches the table."""
        with Session(engine) as plain:
            plain.add(Patient(id=1, tenant="acme", email="ann@acme.test"))
            with pytest.raises(StatementError) as caught:
                plain.flush()
        assert isinstance(caught.value.orig, keybroker_client.InvalidParameterError)
        assert _raw(engine, "email") == {}


class TestBlindIndexColumn:
    """Equality search over an encrypted column through its blind index."""

    def test_search_finds_the_row_and_only_it(self, session, engine, client):
        """The same email in another tenant and other emails in this one do not match."""
        session.add_all(
            [
                Patient(id=1, tenant="acme", email="ann@acme.test"),
                Patient(id=2, tenant="acme", email="bob@acme.test"),
                Patient(id=3, tenant="globex", email="ann@acme.test"),
            ]
        )
        session.commit()
        with _session(engine, client) as fresh:
            where = blind_index_filter(
                Patient.email_idx, "ann@acme.test", client=client, tenant="acme"
            )
            found = fresh.scalars(select(Patient).where(where)).all()
            missing = blind_index_filter(
                Patient.email_idx, "eve@acme.test", client=client, tenant="acme"
            )
            assert fresh.scalars(select(Patient).where(missing)).all() == []
        assert [(p.id, p.email) for p in found] == [(1, "ann@acme.test")]

    def test_a_changed_value_is_indexed_again(self, session, client):
        """After an update the old value no longer finds the row and the new one does."""
        session.add(Patient(id=1, tenant="acme", email="ann@acme.test"))
        session.commit()
        session.get(Patient, 1).email = "ann@new.test"
        session.commit()

        def ids(email: str) -> list[int]:
            where = blind_index_filter(Patient.email_idx, email, client=client, tenant="acme")
            return list(session.scalars(select(Patient.id).where(where)))

        assert (ids("ann@acme.test"), ids("ann@new.test")) == ([], [1])

    def test_filter_refuses_a_plain_column(self, client):
        """Only a BlindIndexColumn can be searched this way."""
        with pytest.raises(TypeError, match="BlindIndexColumn"):
            blind_index_filter(Patient.tenant, "acme", client=client, tenant="acme")


class TestDocs:
    """The documented example runs as written."""

    def test_sqlalchemy_example_runs(self, daemon, tmp_path):
        """The Python block of "SQLAlchemy columns" in docs/clients/python.md exits 0."""
        section = DOCS.read_text().split("## SQLAlchemy columns", 1)[1].split("\n## ", 1)[0]
        block = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0]
        script = tmp_path / "example.py"
        script.write_text(block)
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"KEYBROKER_SOCKET": str(daemon.socket), "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "found: ann@acme.test" in result.stdout
