"""Least privilege and injection (RELIABILITY.md 3 and 4.3): SEC-01 to SEC-04."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.timeout(120)

Connect = Callable[..., psycopg.Connection[Any]]

PRODUCER_CALLS = {
    "enqueue(text,jsonb,text,anycompatible,timestamp with time zone,interval,integer,jsonb,text,"
    "timestamp with time zone,text,text,text[],jsonb,bigint[],interval,interval)",
    "enqueue_many(jsonb)",
    "priority(text)",
    "schema_version()",
}
WORKER_CALLS = {
    "claim(text[],text,integer,interval,text[])",
    "heartbeat(bigint,bigint,interval)",
    "complete(bigint,bigint,jsonb)",
    "complete_many(bigint[],bigint[],jsonb[])",
    "fail(bigint,bigint,text,text,interval,text)",
    "snooze(bigint,bigint,interval)",
    "release(bigint,bigint)",
    "add_log(bigint,bigint,text)",
    "set_progress(bigint,bigint,numeric)",
    "reconcile(integer,boolean)",
    "schema_version()",
}
ADMIN_ONLY = {
    "pause_queue(text)",
    "resume_queue(text)",
    "configure_queue(text,jsonb)",
    "redrive(jsonb,integer,boolean)",
    "retry(bigint)",
    "purge_dead_letters(jsonb,integer)",
    "archive_dead_letters(integer)",
    "set_retry_policy(text,jsonb)",
}


def can_execute(db: psycopg.Connection[Any], role: str, signature: str) -> bool:
    row = db.execute(
        "SELECT has_function_privilege(%s, %s, 'EXECUTE') AS ok", (role, f"jobqueue.{signature}")
    ).fetchone()
    assert row is not None
    return bool(row["ok"])


@pytest.mark.parametrize("signature", sorted(PRODUCER_CALLS | WORKER_CALLS | ADMIN_ONLY))
def test_role_privilege_matrix(db: psycopg.Connection[Any], signature: str) -> None:
    """SEC-01 (catalogue side): who may call what."""
    assert can_execute(db, "jobqueue_producer", signature) == (signature in PRODUCER_CALLS)
    assert can_execute(db, "jobqueue_worker", signature) == (signature in WORKER_CALLS)
    assert can_execute(db, "jobqueue_admin", signature)
    assert not can_execute(db, "public", signature)


def test_app_roles_cannot_touch_tables(db: psycopg.Connection[Any]) -> None:
    """SEC-01: no app role has any privilege on a private table or sequence."""
    rows = db.execute(
        "SELECT c.relname, r.rolname, p.privilege_type FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'jobqueue' "
        "CROSS JOIN (VALUES ('jobqueue_producer'), ('jobqueue_worker'), ('jobqueue_admin')) r(rolname) "
        "CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) p(privilege_type) "
        "WHERE c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version' "
        "AND has_table_privilege(r.rolname, c.oid, p.privilege_type)"
    ).fetchall()
    assert rows == []


def test_producer_and_worker_are_refused_outside_their_rights(
    db: psycopg.Connection[Any], connect: Connect, login_role: Callable[[str], str]
) -> None:
    """SEC-01 (runtime side): denials raise 42501 and change nothing."""
    producer = connect(user=login_role("jobqueue_producer"))
    worker = connect(user=login_role("jobqueue_worker"))
    job = producer.execute("SELECT jobqueue.enqueue('t', '{}') AS id").fetchone()["id"]  # type: ignore[index]
    for conn, statement in [
        (producer, "SELECT * FROM jobqueue.claim(ARRAY['default'], 'w', 1)"),
        (producer, "SELECT jobqueue.complete(1, 1)"),
        (producer, "SELECT jobqueue.pause_queue('default')"),
        (producer, "SELECT * FROM jobqueue.job"),
        (worker, "SELECT jobqueue.enqueue('t', '{}')"),
        (worker, "SELECT jobqueue.redrive()"),
        (worker, "DELETE FROM jobqueue.job"),
        (worker, "SELECT * FROM jobqueue.job_event"),
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    claimed = worker.execute("SELECT id, token FROM jobqueue.claim(ARRAY['default'], 'w', 1)").fetchall()
    assert [row["id"] for row in claimed] == [job]
    assert (
        worker.execute("SELECT jobqueue.complete(%s, %s) AS s", (job, claimed[0]["token"])).fetchone()["s"]
        == "completed"
    )  # type: ignore[index]
    event = db.execute(
        "SELECT actor FROM jobqueue.job_event WHERE job_id = %s AND to_state = 'completed'", (job,)
    ).fetchone()
    assert event is not None and event["actor"].startswith("jq_login_")


def test_definer_functions_are_pinned(db: psycopg.Connection[Any]) -> None:
    """SEC-02: every SECURITY DEFINER function pins search_path; PUBLIC executes none."""
    unpinned = db.execute(
        "SELECT p.oid::regprocedure::text AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'jobqueue' AND p.prosecdef AND NOT EXISTS "
        "(SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search_path=%%')"
    ).fetchall()
    assert unpinned == []
    public = db.execute(
        "SELECT p.oid::regprocedure::text AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'jobqueue' AND has_function_privilege('public', p.oid, 'EXECUTE')"
    ).fetchall()
    assert public == []
    pins = db.execute(
        "SELECT DISTINCT c FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, "
        "unnest(p.proconfig) c WHERE n.nspname = 'jobqueue' AND c LIKE 'search_path=%%'"
    ).fetchall()
    assert all(row["c"].replace(" ", "").endswith("pg_temp") for row in pins), pins


def test_search_path_hijack(db: psycopg.Connection[Any], connect: Connect, login_role: Callable[[str], str]) -> None:
    """SEC-03: look-alike objects in a caller-controlled schema and in pg_temp are never used."""
    name = login_role("jobqueue_producer")
    db.execute("CREATE SCHEMA evil")
    db.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA evil TO {}").format(sql.Identifier(name)))
    db.execute("CREATE TABLE evil.job (id bigint, queue text, type text, payload jsonb)")
    db.execute("CREATE TABLE evil.called (what text)")
    db.execute(sql.SQL("GRANT ALL ON evil.job, evil.called TO {}").format(sql.Identifier(name)))
    db.execute(
        "CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql "
        "AS $$ INSERT INTO evil.called VALUES ('now'); SELECT '2000-01-01'::timestamptz $$"
    )
    db.execute(
        "CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql "
        "AS $$ INSERT INTO evil.called VALUES ('jsonb_typeof'); SELECT 'object' $$"
    )
    db.execute(
        "CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql "
        "AS $$ INSERT INTO evil.called VALUES ('nextval'); SELECT 1::bigint $$"
    )
    producer = connect(user=name)
    producer.execute("SET search_path = evil, pg_catalog, public")  # evil first, even before pg_catalog
    producer.execute("CREATE TEMP TABLE job (id bigint, queue text, type text, payload jsonb)")
    job = producer.execute("SELECT jobqueue.enqueue('t', '{\"a\": 1}') AS id").fetchone()["id"]  # type: ignore[index]
    assert db.execute("SELECT count(*) AS n FROM evil.job").fetchone()["n"] == 0  # type: ignore[index]
    assert db.execute("SELECT count(*) AS n FROM evil.called").fetchone()["n"] == 0  # type: ignore[index]
    assert producer.execute("SELECT count(*) AS n FROM pg_temp.job").fetchone()["n"] == 0  # type: ignore[index]
    real = db.execute(
        "SELECT payload, created_at > '2001-01-01' AS recent FROM jobqueue.jobs WHERE id = %s", (job,)
    ).fetchone()
    assert real is not None and real["payload"] == {"a": 1} and real["recent"]


INJECTIONS = [
    "x'; DROP TABLE jobqueue.job; --",
    '"',
    "$$",
    "a b",
    "x" * 10_000,
    "",
    "pg_catalog.x\x01",
    "\u0430bc",
    "queue\n",
    "q;q",
    "%s",
    "../etc",
]


def _relations(db: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    rows = db.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'jobqueue' ORDER BY 1"
    ).fetchall()
    return [(row["relname"], row["relkind"]) for row in rows]


@pytest.mark.parametrize("name", INJECTIONS)
def test_queue_name_injection(db: psycopg.Connection[Any], name: str) -> None:
    """SEC-04: hostile queue names are refused naming the field, or kept verbatim as data."""
    relations = _relations(db)
    before = db.execute("SELECT count(*) AS n FROM jobqueue.jobs").fetchone()["n"]  # type: ignore[index]
    try:
        job = db.execute("SELECT jobqueue.enqueue('t', '{}', queue => %s) AS id", (name,)).fetchone()
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.StringDataRightTruncation) as exc:
        assert exc.diag.message_primary and exc.diag.message_primary.startswith("queue:"), exc
        assert exc.diag.column_name == "queue"
        assert db.execute("SELECT count(*) AS n FROM jobqueue.jobs").fetchone()["n"] == before  # type: ignore[index]
    else:
        assert job is not None
        stored = db.execute("SELECT queue FROM jobqueue.jobs WHERE id = %s", (job["id"],)).fetchone()
        assert stored is not None and stored["queue"] == name
    assert _relations(db) == relations
    for statement in [
        "SELECT jobqueue.pause_queue(%s)",
        "SELECT jobqueue.configure_queue(%s, '{}')",
        "SELECT count(*) FROM jobqueue.claim(ARRAY[%s], 'w', 1)",
    ]:
        try:
            db.execute(statement, (name,))
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.StringDataRightTruncation) as exc:
            assert exc.diag.column_name in ("queue", "queues"), (statement, exc)
    assert _relations(db) == relations
