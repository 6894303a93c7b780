"""MIG-01: upgrading an empty database through every revision gives exactly sql/schema.sql."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobqueue import migrations
from jobqueue.config import DatabaseTarget
from jobqueue.db import REQUIRED_SCHEMA_VERSION, check_schema, connect
from jobqueue.embedded import tool
from jobqueue.errors import SchemaOutOfDate

pytestmark = pytest.mark.timeout(300)

#: Lines of a pg_dump that say nothing about the schema: headers, session settings, the
#: random \restrict key pg_dump 18 writes, and the random per-column `pg_attver` option the
#: Debian PostgreSQL 15 build on these machines stamps on every new column (pg_roles' too).
_NOISE = re.compile(
    r"^(--|SET |SELECT pg_catalog\.set_config|\\restrict|\\unrestrict"
    r"|ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(pg_attver=\d+\);$)"
)


@pytest.fixture
def empty_database(server: Any) -> Iterator[Callable[[], DatabaseTarget]]:
    made: list[str] = []

    def _make() -> DatabaseTarget:
        name = f"jq_mig_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        made.append(name)
        return DatabaseTarget(server.url(name), "test")

    yield _make
    with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def schema_dump(target: DatabaseTarget) -> list[str]:
    out = subprocess.run(
        [
            str(tool("pg_dump")),
            "--schema-only",
            "--no-owner",
            "--schema=jobqueue",
            "--exclude-table=jobqueue.alembic_version",
            f"--dbname={target.url}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip() and not _NOISE.match(line)]


def apply_schema_sql(target: DatabaseTarget, psql: str) -> None:
    schema = migrations.resource_dir("sql") / "schema.sql"
    proc = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(schema), target.url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"psql -f sql/schema.sql failed: {proc.stderr}"


def test_upgrade_through_every_revision_equals_schema_sql(
    empty_database: Callable[[], DatabaseTarget], psql: str
) -> None:
    fresh, migrated = empty_database(), empty_database()
    apply_schema_sql(fresh, psql)
    migrations.upgrade(migrated)
    expected, actual = schema_dump(fresh), schema_dump(migrated)
    diff = "\n".join(difflib.unified_diff(expected, actual, "sql/schema.sql", "alembic head", lineterm=""))
    assert not diff, f"alembic head differs from sql/schema.sql; add a revision:\n{diff}"
    assert len(expected) > 3  # the comparison saw a real schema


def test_migrate_is_idempotent_and_records_head(empty_database: Callable[[], DatabaseTarget]) -> None:
    target = empty_database()
    assert not migrations.state(target).up_to_date
    migrations.upgrade(target)
    before = schema_dump(target)
    migrations.upgrade(target)
    state = migrations.state(target)
    assert state.up_to_date and state.current == state.head
    assert schema_dump(target) == before


def test_two_hosts_migrating_at_once(empty_database: Callable[[], DatabaseTarget]) -> None:
    """Four `jobqueue migrate` processes on one empty database: all succeed, one schema results."""
    target = empty_database()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "--database-url", target.url, "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(proc.wait(timeout=120), proc.communicate()) for proc in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    outputs = sorted(out.strip().split(" ")[0] for _, (out, _err) in results)
    assert outputs == ["already", "already", "already", "migrated"], results
    assert migrations.state(target).up_to_date


def test_downgrade_to_base_then_upgrade(empty_database: Callable[[], DatabaseTarget]) -> None:
    from alembic import command

    target = empty_database()
    migrations.upgrade(target)
    expected = schema_dump(target)
    command.downgrade(migrations.alembic_config(target), "base")
    assert migrations.state(target).current is None
    migrations.upgrade(target)
    assert schema_dump(target) == expected


def test_offline_sql_takes_the_lock_and_sets_lock_timeout_per_revision() -> None:
    text = migrations.upgrade_sql()
    assert f"pg_advisory_xact_lock({migrations.MIGRATION_LOCK_KEY})" in text
    revisions = len(list((migrations.resource_dir("alembic") / "versions").glob("[0-9]*_*.py")))
    assert text.count("SET LOCAL lock_timeout") == revisions
    assert "jobqueue.schema_version()" in text


def test_schema_check_refuses_missing_or_old_schema(empty_database: Callable[[], DatabaseTarget]) -> None:
    target = empty_database()
    with connect(target) as conn:
        with pytest.raises(SchemaOutOfDate, match="run `jobqueue migrate`"):
            check_schema(conn, target)
        conn.execute("CREATE SCHEMA jobqueue")
        conn.execute(
            f"CREATE FUNCTION jobqueue.schema_version() RETURNS int LANGUAGE sql "
            f"AS 'SELECT {REQUIRED_SCHEMA_VERSION - 1}'"
        )
        older, needed = REQUIRED_SCHEMA_VERSION - 1, REQUIRED_SCHEMA_VERSION
        message = rf"version {older}, this version needs {needed}; run `jobqueue migrate`"
        with pytest.raises(SchemaOutOfDate, match=message):
            check_schema(conn, target)


def test_library_on_a_missing_schema_says_run_migrate_in_one_line(empty_database: Callable[[], DatabaseTarget]) -> None:
    """Issue 14 item 1: the library's first call on an unmigrated database raises one line
    naming the database and `jobqueue migrate` (was: a generic error "schema "jobqueue" does
    not exist" under two chained tracebacks); every path, and nothing is created."""
    from jobqueue import JobQueue

    target = empty_database()
    with JobQueue(target.url, pool_size=2) as jq:
        calls: list[Callable[[], Any]] = [
            lambda: jq.enqueue("t", {"a": 1}),
            lambda: jq.enqueue_many([{"type": "t", "payload": {"n": 1}}]),
            lambda: jq.enqueue_many([{"type": "t", "payload": {"n": i}} for i in range(1000)]),  # COPY
            lambda: jq.stats(),
            lambda: jq.get(1),
        ]
        for call in calls:
            with pytest.raises(SchemaOutOfDate) as err:
                call()
            message = str(err.value)
            assert message == f"{jq.target.display} has no jobqueue schema; run `jobqueue migrate`"
            assert err.value.__cause__ is None and err.value.__suppress_context__
        with psycopg.connect(target.url) as conn:  # the caller's own transaction
            with pytest.raises(SchemaOutOfDate, match=r"missing or out of date; run `jobqueue migrate`$"):
                jq.enqueue("t", {}, connection=conn)
            conn.rollback()
    with connect(target) as conn:
        assert conn.execute("SELECT to_regnamespace('jobqueue') AS s").fetchone() == {"s": None}


def test_library_on_an_older_schema_says_which_version_and_run_migrate(
    empty_database: Callable[[], DatabaseTarget],
) -> None:
    from jobqueue import JobQueue

    target = empty_database()
    with connect(target) as conn:
        conn.execute("CREATE SCHEMA jobqueue")
        conn.execute(
            "CREATE FUNCTION jobqueue.schema_version() RETURNS int LANGUAGE sql "
            f"AS 'SELECT {REQUIRED_SCHEMA_VERSION - 1}'"
        )
    with JobQueue(target.url, pool_size=2) as jq, pytest.raises(SchemaOutOfDate) as err:
        jq.health()
    assert str(err.value) == (
        f"{DatabaseTarget(target.url, '--database-url').display} has jobqueue schema version "
        f"{REQUIRED_SCHEMA_VERSION - 1}, this version needs "
        f"{REQUIRED_SCHEMA_VERSION}; run `jobqueue migrate`"
    )


def test_migrated_schema_passes_the_check(db_url: str) -> None:
    target = DatabaseTarget(db_url, "test")
    with connect(target) as conn:
        assert check_schema(conn, target) == REQUIRED_SCHEMA_VERSION


def _limits_revision() -> tuple[str, str]:
    """(revision, down_revision) of the issue-12 revision (`*_limits.py`), however renumbered."""
    [path] = (migrations.resource_dir("alembic") / "versions").glob("*_limits.py")
    text = path.read_text()
    found = dict(re.findall(r'^(revision|down_revision) = "([^"]+)"', text, re.MULTILINE))
    return found["revision"], found["down_revision"]


def test_limits_revision_puts_waiting_jobs_right_and_keeps_workers(
    empty_database: Callable[[], DatabaseTarget],
) -> None:
    """Upgrading: a waiting job enqueued with a past run_at (and aged from it) gets its enqueue
    time back as run time and its enqueued priority; existing workers stay registered (no
    tenant). Downgrading: of two workers of one id in different tenants, one is kept."""
    from alembic import command

    revision, before = _limits_revision()
    target = empty_database()
    cfg = migrations.alembic_config(target)
    command.upgrade(cfg, before)
    with psycopg.connect(target.url, autocommit=True) as conn:
        jumper = scalar_id(conn, "SELECT jobqueue.enqueue('t', '{}', priority => 0, run_at => '1900-01-01Z')")
        future = scalar_id(conn, "SELECT jobqueue.enqueue('t', '{}', delay => interval '1 hour')")
        conn.execute("UPDATE jobqueue.job SET priority = 10 WHERE id = %s", [jumper])  # what aging gave it
        conn.execute("SELECT jobqueue.register_worker('web-1', 'host-a')")
        future_run_at = conn.execute("SELECT run_at FROM jobqueue.job WHERE id = %s", [future]).fetchone()[0]
    command.upgrade(cfg, revision)
    with psycopg.connect(target.url, autocommit=True) as conn:
        row = conn.execute("SELECT run_at = created_at, priority FROM jobqueue.job WHERE id = %s", [jumper]).fetchone()
        assert row == (True, 0)
        assert conn.execute("SELECT run_at FROM jobqueue.job WHERE id = %s", [future]).fetchone()[0] == future_run_at
        assert conn.execute("SELECT worker_id, host, tenant_id FROM jobqueue.worker").fetchall() == [
            ("web-1", "host-a", None)
        ]
        conn.execute("INSERT INTO jobqueue.worker (worker_id, host, tenant_id, last_seen_at) "
                     "VALUES ('web-1', 'host-b', 'B', now() + interval '1 minute')")
    command.downgrade(cfg, before)
    with psycopg.connect(target.url, autocommit=True) as conn:
        assert conn.execute("SELECT worker_id, host FROM jobqueue.worker").fetchall() == [("web-1", "host-b")]
        assert conn.execute("SELECT jobqueue.schema_version()").fetchone() == (2,)  # as before the limits


def scalar_id(conn: psycopg.Connection[Any], statement: str) -> int:
    row = conn.execute(statement).fetchone()
    assert row is not None
    return int(row[0])


def _counters_revision() -> tuple[str, str]:
    """(revision, down_revision) of the issue-17 counters revision (`*_counters.py`), however
    re-chained when merged."""
    [path] = (migrations.resource_dir("alembic") / "versions").glob("*_counters.py")
    found = dict(re.findall(r'^(revision|down_revision) = "([^"]+)"', path.read_text(), re.MULTILINE))
    return found["revision"], found["down_revision"]


def test_counters_revision_seeds_from_the_rows_present_and_downgrades(
    empty_database: Callable[[], DatabaseTarget],
) -> None:
    """Upgrading seeds the counters as if they had always existed: every job row counts once
    as enqueued and once where it finished; failed attempts and retries from the error
    entries and the dead-letter reasons; histograms from the completed rows. Downgrading drops
    them and fail/reconcile work as before."""
    from alembic import command

    revision, before = _counters_revision()
    target = empty_database()
    cfg = migrations.alembic_config(target)
    command.upgrade(cfg, before)
    with psycopg.connect(target.url, autocommit=True) as conn:
        version_before = conn.execute("SELECT jobqueue.schema_version()").fetchone()
        for _ in range(4):
            conn.execute("SELECT jobqueue.enqueue('t', '{}', max_attempts => 2)")
        got = conn.execute("SELECT id, token FROM jobqueue.claim(ARRAY['default'], 'w', 3)").fetchall()
        conn.execute("SELECT jobqueue.complete(%s, %s)", got[0])
        conn.execute("SELECT jobqueue.fail(%s, %s, 'x')", got[1])  # retrying (1 failed attempt)
        conn.execute("SELECT jobqueue.fail(%s, %s, 'x', 'permanent')", got[2])  # dead letter
        conn.execute("SELECT jobqueue.cancel(id) FROM jobqueue.job WHERE state = 'pending' LIMIT 1")
    command.upgrade(cfg, revision)
    with psycopg.connect(target.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT enqueued, completed, failed, retried, dead_lettered, cancelled, running,"
            " (SELECT sum(x) FROM unnest(run_time_buckets) x) FROM jobqueue.counters()"
        ).fetchall()
        assert row == [(4, 1, 2, 1, 1, 1, 0, 1)]
        # counting goes on from the seed
        conn.execute("SELECT jobqueue.enqueue('t', '{}')")
        assert conn.execute("SELECT enqueued FROM jobqueue.counters()").fetchone() == (5,)
    command.downgrade(cfg, before)
    with psycopg.connect(target.url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('jobqueue.counter_delta')").fetchone() == (None,)
        assert conn.execute("SELECT jobqueue.schema_version()").fetchone() == version_before
        job = conn.execute("SELECT id, token FROM jobqueue.claim(ARRAY['default'], 'w', 1)").fetchone()
        assert conn.execute("SELECT jobqueue.fail(%s, %s, 'x')", job).fetchone() == ("retrying",)
        assert "expired_leases" in conn.execute("SELECT jobqueue.reconcile()").fetchone()[0]
