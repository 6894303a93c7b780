"""Alembic environment for jobqueue: revisions run frozen SQL; see jobqueue/migrations.py."""

from __future__ import annotations

import psycopg
from sqlalchemy import create_engine, pool

from alembic import context
from jobqueue.migrations import MIGRATION_LOCK_KEY, VERSION_TABLE_SCHEMA

config = context.config
url = config.attributes.get("url")
#: e.g. prepare_threshold=None behind a transaction pooler (jobqueue.config).
connect_kwargs = config.attributes.get("connect_kwargs") or {}

# The version table lives in the jobqueue schema, which must exist before alembic looks for it.
ENSURE_SCHEMA = f"CREATE SCHEMA IF NOT EXISTS {VERSION_TABLE_SCHEMA}"


def run_migrations_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        version_table_schema=VERSION_TABLE_SCHEMA,
        transactional_ddl=True,
        output_buffer=config.output_buffer if hasattr(config, "output_buffer") else None,
    )
    with context.begin_transaction():
        context.get_context().impl.static_output(
            f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});\n{ENSURE_SCHEMA};\n"
        )
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(url, **connect_kwargs),
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            version_table_schema=VERSION_TABLE_SCHEMA,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            # Serialise concurrent migrators: the second waits here, then sees head and stops.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            connection.exec_driver_sql(ENSURE_SCHEMA)
            # Read under the lock: what this process found is what it actually upgraded from.
            config.attributes["found_revision"] = context.get_context().get_current_revision()
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
