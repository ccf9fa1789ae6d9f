"""The PostgreSQL key store against a real server: the shared contract, a fleet, outages.

Each test gets a fresh database (`pg_database`); tests that stop the server start it again
(the fixture also does, whatever happened), so the session's server is shared safely.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from psycopg import sql
from structlog.testing import capture_logs
from support.postgres import free_port
from unit.keystore.contract import KEY, TYPE, KeyStoreContract, Recorder

from broker.errors import ConfigError, KeyStoreReadOnlyError, KeyStoreUnavailableError
from broker.keystore.postgres import (
    SCHEMA_VERSION,
    PostgresKeyStore,
    PostgresSettings,
    init_schema,
    migrate_schema,
)
from broker.keystore.postgres import schema as schema_module
from broker.kms.local.keyring import Keyring

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from support.postgres import PgDatabase, PostgresServer

    from broker.keystore.base import KeyStore

UNREACHABLE = "key store unavailable (database unreachable); no change was made"
DISK_FULL_TRIGGER = """
CREATE FUNCTION kb_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER kb_test_disk_full BEFORE INSERT OR UPDATE ON keybroker_key_versions
    FOR EACH ROW EXECUTE FUNCTION kb_test_disk_full();
"""
DROP_TRIGGER = "DROP TRIGGER kb_test_disk_full ON keybroker_key_versions"


def _settings(database: PgDatabase, **overrides: object) -> PostgresSettings:
    """Settings for the test database with short waits (libpq's shortest connect timeout)."""
    values: dict[str, object] = {"dsn": database.dsn, "connect_timeout": 2, "poll_seconds": 0.2}
    values.update(overrides)
    return PostgresSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def database(pg_database: PgDatabase) -> PgDatabase:
    """A fresh database with the current key store schema."""
    assert init_schema(_settings(pg_database))[0] == SCHEMA_VERSION
    return pg_database


@pytest.fixture
def open_store(database: PgDatabase) -> Iterator[Callable[..., PostgresKeyStore]]:
    """Opens store objects on the test database (each with its own pool, like a daemon)."""
    opened: list[PostgresKeyStore] = []

    def open_one(**overrides: object) -> PostgresKeyStore:
        opened.append(PostgresKeyStore.open(_settings(database, **overrides)))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


@contextlib.contextmanager
def _server_down(server: PostgresServer, mode: str = "immediate") -> Iterator[None]:
    """The server stopped for the block, and started again whatever happened in it."""
    server.stop(mode)
    try:
        yield
    finally:
        server.start()


class TestPostgresKeyStoreContract(KeyStoreContract):
    """The contract against a real PostgreSQL database."""

    @pytest.fixture
    def store(self, open_store: Callable[..., PostgresKeyStore]) -> KeyStore:
        """A store on an empty database."""
        return open_store()

    @pytest.fixture
    def reopen(self, open_store: Callable[..., PostgresKeyStore]) -> Callable[[], KeyStore]:
        """Another store object, with its own pool, on the same database."""
        return open_store

    @pytest.fixture
    def failing_writes(
        self, database: PgDatabase
    ) -> Callable[[], contextlib.AbstractContextManager[None]]:
        """A trigger makes every version write fail as PostgreSQL does on a full disk."""

        @contextlib.contextmanager
        def full_disk() -> Iterator[None]:
            with database.server.admin(database.name) as admin:
                admin.execute(DISK_FULL_TRIGGER)
                try:
                    yield
                finally:
                    admin.execute(DROP_TRIGGER)

        return full_disk


class TestFleet:
    """Several daemons on one database: one version per rotation, changes seen in seconds."""

    def test_two_daemons_rotating_at_once_make_one_version_per_round(
        self, open_store: Callable[..., PostgresKeyStore]
    ) -> None:
        """Twenty rounds of two pools rotating the same key together add twenty versions."""
        stores = [open_store(), open_store()]
        stores[0].create_key(KEY, TYPE, Recorder(b"v1"))
        barrier = threading.Barrier(2)

        def rotate(store: PostgresKeyStore, current: int) -> int:
            barrier.wait(timeout=10)
            return store.add_version(KEY, expected_current=current, seal=Recorder(b"r")).current

        with ThreadPoolExecutor(max_workers=2) as pool:
            for expected in range(1, 21):
                rounds = [pool.submit(rotate, store, expected) for store in stores]
                assert [r.result(timeout=30) for r in rounds] == [expected + 1] * 2
        assert sorted(stores[1].load().keys[KEY].versions) == list(range(1, 22))

    def test_a_change_reaches_another_daemon_within_two_seconds(
        self, open_store: Callable[..., PostgresKeyStore]
    ) -> None:
        """B, waiting on LISTEN with polling far off, sees A's new key in under two seconds."""
        writer, reader = open_store(), open_store(poll_seconds=30)
        since = reader.load().revision
        seen: list[float] = []

        def watch() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                reader.wait_for_change(30)
                changed = reader.changes(since)
                if changed is not None and KEY in changed.keys:
                    seen.append(time.monotonic())
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(0.3)  # the watcher is inside wait_for_change
        committed = time.monotonic()
        key = writer.create_key(KEY, TYPE, Recorder(b"v1"))
        watcher.join(timeout=15)
        assert seen, "the change never reached the other store"
        assert seen[0] - committed < 2.0
        snapshot = reader.changes(since)
        assert snapshot is not None
        assert snapshot.keys == {KEY: key}

    def test_a_reader_following_changes_misses_none_committed_out_of_order(
        self, open_store: Callable[..., PostgresKeyStore]
    ) -> None:
        """A change that took its revision first but commits last is still seen by a follower.

        Key "slow" takes its revision, then stalls before commit while "fast" is created;
        a reader polling `changes` in between must not move past the stalled revision.
        """
        slow_store, fast_store, reader = open_store(), open_store(), open_store()
        since = reader.load().revision
        sealing, release = threading.Event(), threading.Event()

        def stalled_seal(version: int) -> bytes:
            sealing.set()
            release.wait(timeout=10)
            return Recorder(b"slow").material(version)

        slow = threading.Thread(target=slow_store.create_key, args=("slow", TYPE, stalled_seal))
        fast = threading.Thread(target=fast_store.create_key, args=("fast", TYPE, Recorder(b"f")))
        slow.start()
        assert sealing.wait(timeout=10)
        fast.start()
        time.sleep(0.3)  # "fast" would commit now if revisions could commit out of order
        seen: set[str] = set()
        early = reader.changes(since)
        if early is not None:
            seen |= set(early.keys)
            since = early.revision
        release.set()
        slow.join(timeout=10)
        fast.join(timeout=10)
        late = reader.changes(since)
        seen |= set() if late is None else set(late.keys)
        assert seen == {"slow", "fast"}


class TestOutage:
    """The database going away and coming back; nothing acknowledged is lost."""

    def test_changes_fail_fast_while_the_known_keys_keep_serving(
        self, open_store: Callable[..., PostgresKeyStore], database: PgDatabase
    ) -> None:
        """With the server gone a rotation is refused in seconds; the keyring's view is intact."""
        store = open_store()
        keyring = Keyring(store, os.urandom(32))
        keyring.create(KEY, TYPE, b"m" * 32)
        with _server_down(database.server):
            started = time.monotonic()
            with pytest.raises(KeyStoreUnavailableError) as refused:
                keyring.add_version(KEY, b"n" * 32)
            assert time.monotonic() - started < 5
            assert refused.value.message == UNREACHABLE
            assert store.available is False
            assert keyring.current_version(KEY) == 1
            assert keyring.material(KEY, 1) == bytearray(b"m" * 32)
            with pytest.raises(KeyStoreUnavailableError):
                store.load()
            started = time.monotonic()
            store.wait_for_change(0.5)
            assert time.monotonic() - started < 3
        assert keyring.add_version(KEY, b"n" * 32) == 2
        assert store.available is True

    def test_the_same_store_listens_again_after_a_restart(
        self, open_store: Callable[..., PostgresKeyStore], database: PgDatabase
    ) -> None:
        """After the server restarts, the waiting store reconnects and is told of new changes."""
        writer, reader = open_store(), open_store(poll_seconds=30)
        with _server_down(database.server, "fast"):
            reader.wait_for_change(0.5)
            assert reader.available is False
        reader.wait_for_change(5)  # reconnects, and returns at once: changes may have been missed
        since = reader.load().revision
        assert reader.available is True
        writer.create_key(KEY, TYPE, Recorder(b"v1"))
        started = time.monotonic()
        reader.wait_for_change(5)
        assert time.monotonic() - started < 2
        changed = reader.changes(since)
        assert changed is not None
        assert list(changed.keys) == [KEY]

    def test_a_change_in_flight_when_the_server_dies_is_all_or_nothing(
        self, open_store: Callable[..., PostgresKeyStore], database: PgDatabase
    ) -> None:
        """Rotations racing a crash: every acknowledged one survives, none is half written."""
        store = open_store()
        store.create_key(KEY, TYPE, Recorder(b"flight"))
        acknowledged: list[int] = []
        stop = threading.Event()

        def rotate() -> None:
            current = 1
            while not stop.is_set():
                try:
                    key = store.add_version(KEY, expected_current=current, seal=Recorder(b"flight"))
                except KeyStoreUnavailableError:
                    return
                acknowledged.append(key.current)
                current = key.current

        rotator = threading.Thread(target=rotate)
        rotator.start()
        time.sleep(0.5)
        with _server_down(database.server):
            stop.set()
            rotator.join(timeout=30)
        key = open_store().load().keys[KEY]
        assert acknowledged, "no rotation committed before the crash"
        assert set(acknowledged) <= set(key.versions)
        assert key.current in (acknowledged[-1], acknowledged[-1] + 1)
        assert sorted(key.versions) == list(range(1, key.current + 1))
        for number, version in key.versions.items():
            assert version.sealed == Recorder(b"flight").material(number)


class TestOpening:
    """What `open`, `init` and `migrate` refuse, each in one line naming the database."""

    def test_where_names_host_port_and_database_only(
        self, open_store: Callable[..., PostgresKeyStore], database: PgDatabase
    ) -> None:
        """The store's location is host:port/dbname: no user, no password."""
        where = open_store().where()
        assert where == f"127.0.0.1:{database.server.port}/{database.name}"

    def test_a_database_without_the_schema_is_refused_naming_init(
        self, pg_database: PgDatabase
    ) -> None:
        """A database nobody initialised: open says to run `keybroker keystore init`."""
        with pytest.raises(ConfigError, match=r"run `keybroker keystore init`$"):
            PostgresKeyStore.open(_settings(pg_database))
        with pytest.raises(ConfigError, match="keybroker keystore init"):
            migrate_schema(_settings(pg_database))

    def test_init_is_idempotent_even_when_run_concurrently(self, pg_database: PgDatabase) -> None:
        """Three processes' worth of init at once: one creates the schema, all succeed."""
        with ThreadPoolExecutor(max_workers=3) as pool:
            runs = [pool.submit(init_schema, _settings(pg_database)) for _ in range(3)]
            results = [run.result(timeout=30) for run in runs]
        where = f"127.0.0.1:{pg_database.server.port}/{pg_database.name}"
        assert results == [(SCHEMA_VERSION, where)] * 3
        assert migrate_schema(_settings(pg_database)) == (SCHEMA_VERSION, where)
        PostgresKeyStore.open(_settings(pg_database)).close()

    def test_a_pending_migration_is_refused_at_open_then_applied_by_migrate(
        self, database: PgDatabase, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A release with a new migration: open names `migrate`, which applies it once."""
        later = (*schema_module.MIGRATIONS, "CREATE TABLE kb_test_v2 (note text)")
        monkeypatch.setattr(schema_module, "MIGRATIONS", later)
        monkeypatch.setattr(schema_module, "SCHEMA_VERSION", len(later))
        with pytest.raises(ConfigError, match="run `keybroker keystore migrate`"):
            PostgresKeyStore.open(_settings(database))
        with pytest.raises(ConfigError, match="keybroker keystore migrate"):
            init_schema(_settings(database))
        for _ in range(2):
            assert migrate_schema(_settings(database))[0] == len(later)
            with database.server.admin(database.name) as admin:
                applied = admin.execute("SELECT version FROM keybroker_schema_version").fetchall()
                assert admin.execute("SELECT count(*) FROM kb_test_v2").fetchone() == (0,)
            assert sorted(v for (v,) in applied) == list(range(1, len(later) + 1))
        PostgresKeyStore.open(_settings(database)).close()

    def test_a_schema_newer_than_this_release_is_refused_with_both_numbers(
        self, database: PgDatabase
    ) -> None:
        """A database a later keybroker migrated: open, init and migrate say to upgrade."""
        with database.server.admin(database.name) as admin:
            admin.execute("INSERT INTO keybroker_schema_version (version) VALUES (%s)", (99,))
        expected = (
            "the key store schema is version 99; "
            f"this keybroker supports up to {SCHEMA_VERSION}: upgrade keybroker"
        )
        for attempt in (PostgresKeyStore.open, init_schema, migrate_schema):
            with pytest.raises(ConfigError) as refused:
                attempt(_settings(database))  # type: ignore[operator]
            assert str(refused.value).endswith(expected)
            assert "\n" not in str(refused.value)

    def test_an_unreachable_database_is_a_config_error_naming_it(
        self, database: PgDatabase
    ) -> None:
        """Nothing listening: a prompt one-line ConfigError with host:port/dbname, no password."""
        port = free_port()
        dsn = database.dsn.replace(f"port={database.server.port}", f"port={port}")
        started = time.monotonic()
        with capture_logs() as logs, pytest.raises(ConfigError) as refused:
            PostgresKeyStore.open(PostgresSettings(dsn=dsn, connect_timeout=2))
        assert time.monotonic() - started < 5
        message = str(refused.value)
        assert message.startswith(f"127.0.0.1:{port}/{database.name}: ")
        assert "\n" not in message
        assert database.server.password not in message
        assert database.server.password not in repr(logs)

    def test_refused_credentials_are_a_config_error_without_the_password(
        self, database: PgDatabase
    ) -> None:
        """A wrong password: refused at open, and neither password appears anywhere."""
        wrong = "not-the-password-" + os.urandom(6).hex()
        settings = PostgresSettings(dsn=database.server.dsn(database.name, password=wrong))
        with capture_logs() as logs, pytest.raises(ConfigError) as refused:
            PostgresKeyStore.open(settings)
        assert str(refused.value).startswith(f"127.0.0.1:{database.server.port}/{database.name}")
        for secret in (wrong, database.server.password):
            assert secret not in str(refused.value)
            assert secret not in repr(logs)
            assert secret not in repr(settings)

    def test_a_dsn_file_others_can_read_is_refused_with_the_fix(
        self, database: PgDatabase, tmp_path: Path
    ) -> None:
        """Mode 0644 is refused naming chmod 600; at 0600 the same file opens the store."""
        dsn_file = tmp_path / "keystore.dsn"
        dsn_file.write_text(database.dsn + "\n", encoding="utf-8")
        dsn_file.chmod(0o644)
        with pytest.raises(ConfigError, match=f"keystore.dsn_file: .*run chmod 600 {dsn_file}$"):
            PostgresKeyStore.open(PostgresSettings(dsn_file=str(dsn_file)))
        dsn_file.chmod(0o600)
        PostgresKeyStore.open(PostgresSettings(dsn_file=str(dsn_file))).close()


class TestReadOnly:
    """A database that refuses writes (read-only default, or a hot standby)."""

    def test_a_read_only_database_refuses_changes_and_serves_reads(
        self, open_store: Callable[..., PostgresKeyStore], database: PgDatabase
    ) -> None:
        """Reads, and changes that change nothing, work; a rotation is KeyStoreReadOnlyError."""
        writable = open_store()
        writable.bind_root("c" * 64)
        key = writable.create_key(KEY, TYPE, Recorder(b"v1"))
        with database.server.admin() as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(database.name)
                )
            )
        store = open_store()  # new sessions take the database's new default
        assert store.load().keys == {KEY: key}
        store.bind_root("c" * 64)
        assert store.create_key(KEY, TYPE, Recorder(b"again")) == key
        with pytest.raises(KeyStoreReadOnlyError) as refused:
            store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        assert refused.value.message == "the key store's database is read-only; no change was made"
        with pytest.raises(KeyStoreReadOnlyError):
            store.create_key("other", TYPE, Recorder(b"o1"))
        assert store.available is True
        assert store.load().keys == {KEY: key}

    def test_a_full_disk_is_a_read_only_error_and_the_database_stays_available(
        self, open_store: Callable[..., PostgresKeyStore], database: PgDatabase
    ) -> None:
        """SQLSTATE 53100 (disk full) asks an operator to act; nothing was written."""
        store = open_store()
        key = store.create_key(KEY, TYPE, Recorder(b"v1"))
        with database.server.admin(database.name) as admin:
            admin.execute(DISK_FULL_TRIGGER)
        with pytest.raises(KeyStoreReadOnlyError) as refused:
            store.add_version(KEY, expected_current=1, seal=Recorder(b"v2"))
        assert refused.value.message == "the key store's database disk is full; no change was made"
        assert store.available is True
        assert store.load().keys == {KEY: key}
