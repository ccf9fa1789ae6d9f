"""Fixtures shared by the integration tests: SoftHSM2 and a real PostgreSQL server."""

from integration.kms.softhsm import softhsm
from support.postgres import pg_database, postgres

__all__ = ["pg_database", "postgres", "softhsm"]
