from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from broker.errors import ConfigError
from broker.keystore.postgres import PostgresSettings, postgres_settings
from broker.keystore.postgres._sdk import _import

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "s3cret-Pa55"  # noqa: S105 - a made-up password the tests look for in output
DSN = f"postgresql://keys:{SECRET}@db.internal:6543/keyring?sslmode=require"


class TestPostgresSettings:
    """Validation names the field; the DSN and its password never show."""

    @pytest.mark.parametrize(
        ("values", "field"),
        [
            ({}, "keystore.dsn"),
            ({"dsn": DSN, "dsn_file": "/etc/keybroker/dsn"}, "keystore.dsn"),
            ({"dsn": "  "}, "keystore.dsn"),
            ({"dsn": DSN, "sslmode": "sometimes"}, "keystore.sslmode"),
            ({"dsn": DSN, "sslrootcert": ""}, "keystore.sslrootcert"),
            ({"dsn": DSN, "pool_min_size": -1}, "keystore.pool_min_size"),
            ({"dsn": DSN, "pool_max_size": 0}, "keystore.pool_max_size"),
            ({"dsn": DSN, "pool_min_size": 5, "pool_max_size": 4}, "keystore.pool_max_size"),
            ({"dsn": DSN, "connect_timeout": 2.5}, "keystore.connect_timeout"),
            ({"dsn": DSN, "connect_timeout": 0}, "keystore.connect_timeout"),
            ({"dsn": DSN, "poll_seconds": 0}, "keystore.poll_seconds"),
            ({"dsn": DSN, "poll_seconds": "1"}, "keystore.poll_seconds"),
            ({"dsn": DSN, "statement_timeout": True}, "keystore.statement_timeout"),
            ({"dsn": DSN, "statement_timeout": 7200}, "keystore.statement_timeout"),
        ],
    )
    def test_invalid_settings_name_the_field(self, values: dict[str, object], field: str) -> None:
        """Each impossible setting is one line starting with the field's name."""
        with pytest.raises(ConfigError) as refused:
            PostgresSettings(**values)  # type: ignore[arg-type]
        assert re.match(rf"{re.escape(field)}[ :]", str(refused.value))
        assert "\n" not in str(refused.value)
        assert SECRET not in str(refused.value)

    def test_the_dsn_is_not_in_the_repr(self) -> None:
        """Settings can be logged: the DSN (and so its password) is left out."""
        assert SECRET not in repr(PostgresSettings(dsn=DSN))

    @pytest.mark.parametrize(
        ("dsn", "where"),
        [
            (DSN, "db.internal:6543/keyring"),
            (f"host=10.0.0.7 dbname=keys user=kb password={SECRET}", "10.0.0.7:5432/keys"),
            (f"hostaddr=10.0.0.8 port=7000 dbname=k password={SECRET}", "10.0.0.8:7000/k"),
        ],
    )
    def test_location_is_host_port_and_database_only(self, dsn: str, where: str) -> None:
        """The printable location never carries the user or the password."""
        assert PostgresSettings(dsn=dsn).location() == where

    def test_location_falls_back_to_libpq_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Parts the DSN leaves out come from PGHOST, PGPORT and PGDATABASE, as libpq does."""
        monkeypatch.setenv("PGHOST", "envhost")
        monkeypatch.setenv("PGPORT", "6000")
        monkeypatch.setenv("PGDATABASE", "envdb")
        assert PostgresSettings(dsn=f"password={SECRET}").location() == "envhost:6000/envdb"

    def test_a_malformed_dsn_is_refused_without_quoting_it(self) -> None:
        """A DSN libpq cannot parse is refused naming the field, not its contents."""
        settings = PostgresSettings(dsn=f"host=db password='{SECRET}")
        with pytest.raises(ConfigError) as refused:
            settings.parameters()
        assert str(refused.value) == "keystore.dsn is not a valid PostgreSQL connection string"

    def test_parameters_bound_every_wait_and_add_tls(self) -> None:
        """Timeouts, UTC and TLS files reach libpq; the DSN's own options are kept."""
        settings = PostgresSettings(
            dsn=f"host=db dbname=k password={SECRET} options='-c search_path=kb'",
            sslmode="verify-full",
            sslrootcert="/etc/ssl/ca.pem",
            connect_timeout=4,
            statement_timeout=2.5,
        )
        params = settings.parameters()
        assert params["sslmode"] == "verify-full"
        assert params["sslrootcert"] == "/etc/ssl/ca.pem"
        assert params["connect_timeout"] == "4"
        assert params["options"] == "-c search_path=kb -c statement_timeout=2500 -c TimeZone=UTC"
        assert params["tcp_user_timeout"] == "6500"
        assert params["password"] == SECRET

    def test_settings_override_the_dsn_sslmode(self) -> None:
        """A TLS setting wins over the same parameter in the DSN."""
        assert PostgresSettings(dsn=DSN, sslmode="verify-ca").parameters()["sslmode"] == "verify-ca"


class TestDsnFile:
    """The DSN read from a file only its owner may read."""

    def test_a_private_file_gives_the_dsn(self, tmp_path: Path) -> None:
        """A 0600 file's first line (whitespace trimmed) is the DSN."""
        path = tmp_path / "dsn"
        path.write_text(f"  {DSN}\n", encoding="utf-8")
        path.chmod(0o600)
        assert PostgresSettings(dsn_file=str(path)).read_dsn() == DSN

    def test_a_file_others_can_read_is_refused_with_the_chmod(self, tmp_path: Path) -> None:
        """Mode 0644: one line naming the field and the chmod that fixes it, no DSN."""
        path = tmp_path / "dsn"
        path.write_text(DSN, encoding="utf-8")
        path.chmod(0o644)
        with pytest.raises(ConfigError) as refused:
            PostgresSettings(dsn_file=str(path)).parameters()
        assert str(refused.value) == (
            f"keystore.dsn_file: {path}: mode 644 lets other users read it; run chmod 600 {path}"
        )

    @pytest.mark.parametrize(("content", "reason"), [(None, "cannot be read"), ("\n", "is empty")])
    def test_a_missing_or_empty_file_is_refused(
        self, tmp_path: Path, content: str | None, reason: str
    ) -> None:
        """No file, or nothing in it: one line naming the field and the file."""
        path = tmp_path / "dsn"
        if content is not None:
            path.write_text(content, encoding="utf-8")
            path.chmod(0o600)
        with pytest.raises(ConfigError, match=f"^keystore.dsn_file: {path} {reason}"):
            PostgresSettings(dsn_file=str(path)).read_dsn()


class TestFromTable:
    """`postgres_settings`: the configuration table's values, and nothing unknown."""

    def test_known_names_become_settings(self) -> None:
        """Every field of the table reaches the settings."""
        settings = postgres_settings({"dsn": DSN, "pool_max_size": 8, "poll_seconds": 0.5})
        assert settings == PostgresSettings(dsn=DSN, pool_max_size=8, poll_seconds=0.5)

    def test_an_unknown_name_is_refused_naming_it(self) -> None:
        """A misspelt setting is one line naming it, never silently ignored."""
        with pytest.raises(ConfigError, match=r"^keystore.pool_size is not a postgres key store"):
            postgres_settings({"dsn": DSN, "pool_size": 8})


def test_a_missing_driver_names_the_extra() -> None:
    """Without psycopg installed, the error says which extra brings it."""
    with pytest.raises(ConfigError, match=r"install keybroker\[postgres\]$"):
        _import("psycopg_not_installed_here")
