"""Schema migrations: alembic revisions that each run their own frozen SQL.

``sql/schema.sql`` is the current truth; every revision under ``alembic/versions`` runs a
frozen copy of the SQL it introduced (never ``sql/schema.sql`` itself, which changes). A
test proves that upgrading an empty database through every revision gives exactly
``sql/schema.sql``. Upgrades hold a transaction-scoped advisory lock, so two hosts
migrating at once are safe: the second waits, then finds nothing to do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from jobqueue.config import DatabaseTarget
from jobqueue.errors import ConfigurationError, DatabaseUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

#: pg_advisory_xact_lock key held while migrating ("jobq" in ASCII).
MIGRATION_LOCK_KEY = 0x6A6F6271
#: Set for each migration so a migration never waits behind a long lock indefinitely.
MIGRATION_LOCK_TIMEOUT = "60s"
VERSION_TABLE_SCHEMA = "jobqueue"


def resource_dir(name: str) -> Path:
    """``sql`` or ``alembic``: inside the installed wheel, else at the checkout's top level."""
    package = Path(__file__).resolve().parent
    for candidate in (package / f"_{name}", package.parent / name):
        if candidate.is_dir():
            return candidate
    raise ConfigurationError(f"jobqueue is installed without its {name}/ folder")


def schema_sql() -> str:
    """The current schema, ``sql/schema.sql``."""
    return (resource_dir("sql") / "schema.sql").read_text()


def alembic_config(target: DatabaseTarget | None, output: io.StringIO | None = None) -> Config:
    from alembic.config import Config  # imported here: alembic costs every CLI call ~0.5 s

    cfg = Config(stdout=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(resource_dir("alembic")))
    cfg.attributes["url"] = target.url if target else None
    cfg.attributes["connect_kwargs"] = target.connect_kwargs() if target else {}
    if output is not None:
        cfg.output_buffer = output
    return cfg


def upgrade(target: DatabaseTarget) -> str | None:
    """Upgrade to head; return the revision found under the migration lock (None: empty)."""
    from sqlalchemy.exc import DBAPIError

    from alembic import command
    from jobqueue.db import translate

    cfg = alembic_config(target)
    try:
        command.upgrade(cfg, "head")
    except DBAPIError as exc:  # alembic runs on SQLAlchemy: unwrap the driver's error
        if not isinstance(exc.orig, psycopg.Error):
            raise
        error = translate(exc.orig)
        if isinstance(error, DatabaseUnavailable):
            raise DatabaseUnavailable(f"could not connect to {target.display}: {error}") from exc
        raise error from exc
    found: str | None = cfg.attributes.get("found_revision")
    return found


def upgrade_sql() -> str:
    """The SQL a DBA would run to create the current schema from nothing (offline mode)."""
    from alembic import command

    buffer = io.StringIO()
    command.upgrade(alembic_config(None, buffer), "head", sql=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class MigrationState:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def state(target: DatabaseTarget) -> MigrationState:
    """The database's revision and the newest one this package has."""
    from alembic.script import ScriptDirectory

    from jobqueue.db import connect, translated

    script = ScriptDirectory.from_config(alembic_config(target))
    head = script.get_current_head()
    assert head is not None
    with connect(target) as conn, translated():
        row = conn.execute("SELECT to_regclass('jobqueue.alembic_version') IS NOT NULL AS present").fetchone()
        current = None
        if row and row["present"]:
            found = conn.execute("SELECT version_num FROM jobqueue.alembic_version").fetchone()
            current = found["version_num"] if found else None
    return MigrationState(current=current, head=head)


def execute_frozen_sql(path: Path) -> None:
    """Run one revision's frozen SQL file (called from inside an alembic revision)."""
    from alembic import op

    sql = f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}';\n" + path.read_text()
    context = op.get_context()
    if context.as_sql:
        context.impl.static_output(sql)
        return
    # Run on the driver connection: the file has PL/pgSQL bodies with ':' and '%' that
    # SQLAlchemy's text() would take for parameters. With no parameters psycopg sends the
    # whole file in one simple-protocol round trip, inside alembic's transaction.
    driver = op.get_bind().connection.dbapi_connection
    assert driver is not None
    driver.execute(sql)
