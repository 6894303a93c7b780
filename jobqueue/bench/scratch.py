"""The scratch databases the bench works in, never the database it was pointed at.

``<database>_bench`` is cloned for every measurement from ``<database>_bench_template``,
which is migrated with :func:`jobqueue.migrations.upgrade`; peers get empty databases of
their own on the same server.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue.bench.config import QUIET_TIMEOUT_S, BenchError
from jobqueue.bench.statements import BACKENDS, BASELINE_DDL
from jobqueue.config import DatabaseTarget

# -- the scratch databases -------------------------------------------------------------------


def database_url(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + dbname))
    return make_conninfo(url, dbname=dbname)


def scratch_name(url: str, explicit: str | None = None) -> str:
    """``<database>_bench`` (at most 63 bytes), never the database the bench was pointed at."""
    params = conninfo_to_dict(url)
    current = str(params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE") or "postgres")
    name = explicit or f"{current[: 63 - len('_bench_template')]}_bench"
    if name == current:
        raise BenchError(f"scratch_db: {name} is the database the bench was pointed at; it would be dropped")
    if len(name.encode()) > 63 - len("_template"):
        raise BenchError(f"scratch_db: {name} is too long (at most 54 bytes)")
    return name


class Scratch:
    """The scratch database (and its migrated template) on the server the bench targets."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.admin_url = admin_url
        self.name = name
        self.template = f"{name}_template"
        self.url = database_url(admin_url, name)
        self.extra_databases: list[str] = []
        self.track_functions = False
        self.statements = False
        self.oid: int | None = None

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, application_name="jobqueue-bench")

    def connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        url = self.url if dbname is None else database_url(self.admin_url, dbname)
        return psycopg.connect(url, autocommit=True, application_name="jobqueue-bench")

    def create_template(self) -> None:
        from jobqueue import migrations

        with self.admin() as conn:
            for name in (self.name, self.template):
                _drop_database(conn, name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        migrations.upgrade(DatabaseTarget(database_url(self.admin_url, self.template), "bench template"))
        with self.connect(self.template) as conn:
            conn.execute("VACUUM ANALYZE")
            with contextlib.suppress(psycopg.Error):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT count(*) FROM pg_stat_statements")  # fails unless preloaded
                self.statements = True

    def reset(self) -> None:
        """A fresh scratch database, cloned from the migrated template (fresh statistics too)."""
        with self.admin() as conn:
            _drop_database(conn, self.name)
            _terminate(conn, self.template)
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(self.name), sql.Identifier(self.template)
                )
            )
            try:
                # Count calls of the SQL API functions per job (cost scenario). Superuser only.
                conn.execute(sql.SQL("ALTER DATABASE {} SET track_functions = 'all'").format(sql.Identifier(self.name)))
                self.track_functions = True
            except psycopg.Error:
                self.track_functions = False
            row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (self.name,)).fetchone()
            self.oid = int(row[0]) if row else None
        with self.connect() as conn:
            conn.execute(BASELINE_DDL)

    def fresh_database(self, name: str) -> str:
        """An empty database on the same server (for a peer); returns its URL."""
        with self.admin() as conn:
            _drop_database(conn, name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if name not in self.extra_databases:
            self.extra_databases.append(name)
        return database_url(self.admin_url, name)

    def drop_all(self) -> None:
        with self.admin() as conn:
            for name in (self.name, self.template, *self.extra_databases):
                _drop_database(conn, name)

    def wait_quiet(self, dbname: str | None = None) -> None:
        """Wait until no other session uses the database (their statistics are then flushed)."""
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        with self.admin() as conn:
            while time.monotonic() < deadline:
                row = conn.execute(BACKENDS, (dbname or self.name,)).fetchone()
                if row is None or row[0] == 0:
                    break
                time.sleep(0.05)
        time.sleep(0.15)  # a backend leaves pg_stat_activity just before it flushes its statistics


def _drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _terminate(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
