"""Test harness: a real PostgreSQL for every test that needs one.

The server is ``$DATABASE_URL`` when set, else the embedded PostgreSQL 18 that jobqueue
itself uses (started on demand in ``$JOBQUEUE_HOME``). pytest-postgresql's ``noproc``
factory builds a template database migrated with alembic once per run; each test gets a
fresh database cloned from it.

Fixtures:
    db_url       URL of the test's own database (schema migrated to head)
    db           psycopg Connection to it: autocommit, dict rows, as the owning superuser
    connect      factory of more connections to it: connect(user=None, autocommit=True)
    login_role   factory: login_role("jobqueue_producer") -> name of a new LOGIN member role
    psql         path of a psql binary
    server       the server: .url(dbname), .host, .port, .user, .version_num
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from pytest_postgresql import factories

from jobqueue.config import DatabaseTarget
from tests.support.receivers import http_receiver, smtp_receiver  # noqa: F401 - fixtures for every tier
from tests.support.workers import ledger_db, workers, workers_app  # noqa: F401 - fixtures for every tier

ROOT = Path(__file__).resolve().parent.parent
#: Where the Redis tests look when REDIS_URL is not set (the machine's own Redis, as in CI).
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def _local_redis_answers() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# Redis tests use REDIS_URL, or the local Redis when one answers at 127.0.0.1:6379, so that a
# bare `make test` on a machine with Redis tests the mirror; only with no Redis do they skip.
# Set at import, before the test modules that read REDIS_URL when they are collected.
if not os.environ.get("REDIS_URL") and _local_redis_answers():
    os.environ["REDIS_URL"] = LOCAL_REDIS


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str | None
    maintenance_db: str
    version_num: int

    def url(self, dbname: str, user: str | None = None) -> str:
        host = quote(self.host, safe="") if self.host.startswith("/") else self.host
        who = quote(user or self.user, safe="")
        secret = f":{quote(self.password, safe='')}" if self.password and not user else ""
        if self.host.startswith("/"):
            return f"postgresql://{who}{secret}@/{dbname}?host={host}&port={self.port}"
        return f"postgresql://{who}{secret}@{host}:{self.port}/{dbname}"


def _resolve_server() -> Server:
    url = os.environ.get("DATABASE_URL")
    if not url:
        from jobqueue.embedded import EmbeddedServer

        url = EmbeddedServer().ensure_running()
    params = conninfo_to_dict(url)
    with psycopg.connect(make_conninfo(url), autocommit=True) as conn:
        version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        user = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        host = conn.info.host
        port = conn.info.port
    return Server(
        host=str(params.get("host") or host),
        port=int(params.get("port") or port),
        user=str(user),
        password=str(params["password"]) if params.get("password") else None,
        maintenance_db=str(params.get("dbname") or "postgres"),
        version_num=version_num,
    )


SERVER = _resolve_server()
#: Unique per pytest process, so parallel runs on one server do not collide.
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _migrate_template(host: str, port: int, user: str, dbname: str, password: str | None, **_: Any) -> None:
    """pytest-postgresql loader: bring the template database to alembic head."""
    from jobqueue import migrations

    migrations.upgrade(DatabaseTarget(SERVER.url(dbname), "test template"))


postgresql_noproc = factories.postgresql_noproc(
    host=SERVER.host,
    port=SERVER.port,
    user=SERVER.user,
    password=SERVER.password,
    dbname=f"jq_test_{RUN_ID}",
    maintenance_dbname=SERVER.maintenance_db,
    load=[_migrate_template],
)
postgresql = factories.postgresql("postgresql_noproc")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every chaos test is ``serial``: it compares throughput with a baseline taken in the same
    test, which other tests' load would skew (the Makefile's `test` runs them alone)."""
    chaos = ROOT / "tests" / "chaos"
    for item in items:
        if chaos in item.path.parents:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def server() -> Server:
    return SERVER


@pytest.fixture
def db_url(postgresql: psycopg.Connection[Any]) -> str:
    _catch_up_partitions(postgresql)
    return SERVER.url(postgresql.info.dbname)


def _catch_up_partitions(conn: psycopg.Connection[Any]) -> None:
    """A clone of a template migrated before UTC midnight lacks the new day's history
    partition ahead; do what the first reconcile of the day would, so every test starts from
    the state a migration today leaves (a run that crossed midnight failed three tests)."""
    ahead = conn.execute(
        "SELECT to_regclass('jobqueue.job_history_p' || to_char((now() AT TIME ZONE 'UTC')::date"
        " + jobqueue._conf('history_partitions_ahead')::int, 'YYYYMMDD')) IS NULL").fetchone()
    if ahead is not None and ahead[0]:
        conn.execute("SELECT jobqueue._maintain_partitions(false)")
        conn.commit()


@pytest.fixture
def connect(db_url: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    opened: list[psycopg.Connection[Any]] = []

    def _connect(user: str | None = None, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
        dbname = conninfo_to_dict(db_url)["dbname"]
        url = SERVER.url(str(dbname), user=user)
        conn = psycopg.connect(url, autocommit=autocommit, row_factory=dict_row, **kwargs)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def db(connect: Callable[..., psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    return connect()


@pytest.fixture
def login_role(db: psycopg.Connection[Any]) -> Iterator[Callable[[str], str]]:
    """Create LOGIN roles for a test (cluster-wide objects: dropped at teardown)."""
    created: list[str] = []

    def _make(group: str) -> str:
        name = f"jq_login_{uuid.uuid4().hex[:10]}"
        db.execute(
            psycopg.sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Identifier(group)
            )
        )
        created.append(name)
        return name

    yield _make
    for name in created:
        db.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(name)))
        db.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(name)))


@pytest.fixture(scope="session")
def psql() -> str:
    from jobqueue.embedded import tool

    return str(tool("psql")) if tool("psql").exists() else str(shutil.which("psql"))
