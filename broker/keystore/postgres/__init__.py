"""The PostgreSQL key store: a fleet of daemons sharing keys through one database.

Needs the `postgres` extra (psycopg 3 and psycopg-pool), imported on first use. The schema
is created with `init_schema` and upgraded with `migrate_schema` (the `keybroker keystore`
commands); `PostgresKeyStore.open` refuses a database whose schema does not match.
"""

from broker.keystore.postgres.schema import SCHEMA_VERSION, init_schema, migrate_schema
from broker.keystore.postgres.settings import PostgresSettings, postgres_settings
from broker.keystore.postgres.store import PostgresKeyStore

__all__ = [
    "SCHEMA_VERSION",
    "PostgresKeyStore",
    "PostgresSettings",
    "init_schema",
    "migrate_schema",
    "postgres_settings",
]
