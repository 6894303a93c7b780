"""Security (RELIABILITY.md 3 and 4.3): least privilege, pinned definer functions, search_path
hijack, injection (SEC-01..04); secrets (SEC-06), backpressure (SEC-07), the audit trail
(SEC-08), no client time in lease SQL (SEC-09). SEC-05 (tenants): test_sql_tenancy.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.sql_api import api, events

pytestmark = pytest.mark.timeout(120)

Connect = Callable[..., psycopg.Connection[Any]]

PRODUCER_CALLS = {
    "enqueue(text,jsonb,text,anycompatible,timestamp with time zone,interval,integer,jsonb,text,"
    "timestamp with time zone,text,text,text[],jsonb,bigint[],interval,interval)",
    "enqueue_many(jsonb)",
    "priority(text)",
    "schema_version()",
    "cron_next(text,timestamp with time zone,text,integer)",
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
    "cron_next(text,timestamp with time zone,text,integer)",
    "sync_schedules(text,jsonb)",
    "list_schedules()",
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
    "set_tenant_role(text,text)",
    "unset_tenant_role(text)",
    "set_tenant_rate_limit(text,double precision,integer)",
    "clear_tenant_rate_limit(text)",
    "health(interval,bigint,interval,interval,double precision,interval,bigint,bigint)",
    "set_schedule(text,text,jsonb,text,text,integer,boolean,text)",
    "pause_schedule(text)",
    "resume_schedule(text)",
    "remove_schedule(text)",
    "schedule_next(text,integer)",
    "check_alerts(boolean)",
    "list_alerts(text,integer)",
    "get_alert(bigint)",
    "ack_alert(bigint,text)",
    "resolve_alert(bigint,text)",
    "set_alert_rule(text,jsonb,text,text)",
    "remove_alert_rule(text,text,text)",
    "list_alert_rules()",
    "add_alert_channel(text,text,jsonb,jsonb)",
    "set_alert_route(text,jsonb)",
    "remove_alert_channel(text)",
    "list_alert_channels()",
    "test_alert_channel(text)",
    "counters()",
    "histogram_buckets()",
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


def test_a_producer_learns_nothing_of_anothers_job_by_cancelling_it(
    db: psycopg.Connection[Any], connect: Connect, login_role: Callable[[str], str]
) -> None:
    """A producer sees only the jobs it enqueued; cancel() said whose another's job was (42501
    "job N was not enqueued by ..."), while every read said "no job". Now "no job" too, and
    nothing changes; a role that sees every job still gets 42501."""
    owner = connect(user=login_role("jobqueue_producer"))
    other_name = login_role("jobqueue_producer")
    other = connect(user=other_name)
    job = owner.execute("SELECT jobqueue.enqueue('t', '{}') AS id").fetchone()["id"]  # type: ignore[index]
    assert other.execute("SELECT count(*) AS n FROM jobqueue.jobs WHERE id = %s", (job,)).fetchone()["n"] == 0  # type: ignore[index]
    with pytest.raises(psycopg.errors.NoDataFound) as refused:
        other.execute("SELECT jobqueue.cancel(%s)", (job,))
    assert refused.value.diag.message_primary == f"id: no job {job}" and refused.value.diag.column_name == "id"
    unknown = job + 1_000_000
    with pytest.raises(psycopg.errors.NoDataFound) as missing:
        other.execute("SELECT jobqueue.cancel(%s)", (unknown,))
    assert missing.value.diag.message_primary == f"id: no job {unknown}"  # the same as for no job at all
    # a login that also works (sees every job) is told why, as before
    db.execute(f'GRANT jobqueue_worker TO "{other_name}"')
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="was not enqueued by"):
        other.execute("SELECT jobqueue.cancel(%s)", (job,))
    assert db.execute("SELECT state::text AS s FROM jobqueue.job WHERE id = %s", (job,)).fetchone()["s"] == "pending"  # type: ignore[index]
    assert owner.execute("SELECT jobqueue.cancel(%s) AS s", (job,)).fetchone()["s"] == "cancelled"  # type: ignore[index]


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


# -- SEC-06 secrets ---------------------------------------------------------------------------


def test_secrets_not_in_logs(
    db: psycopg.Connection[Any], db_url: str, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """SEC-06: a payload secret never reaches app logs (DEBUG), our error texts, NOTIFY, metrics or Redis."""
    import logging
    import uuid

    from jobqueue import InvalidInput, JobQueue, WorkerConfig

    secret = f"sentinel-{uuid.uuid4().hex}"
    listener = connect()
    listener.execute("LISTEN jobqueue")
    caplog.set_level(logging.DEBUG, logger="jobqueue")
    texts: list[str] = []
    with JobQueue(db_url, pool_size=2) as jq:

        @jq.task(name="leaky", retry={"strategy": "fixed", "initial_delay": 0, "jitter": 0, "max_attempts": 2})
        def leaky(card: str, password: str) -> None:
            raise RuntimeError("card declined")  # a handler's own words; ours must not echo the payload

        job = leaky.enqueue(card="4111", password=secret)
        for _ in range(3):
            assert jq.run_worker(WorkerConfig(burst=True, install_signal_handlers=False, poll_interval_s=0.05,
                                              reconcile_interval_s=0)) == 0
        dead = jq.get(job)
        assert dead.state.value == "dead_letter" and dead.attempt == 2
        # error texts jobqueue generates for bad input that carries the secret
        for bad in [
            {"priority": 99},
            {"queue": "bad queue"},
            {"not_an_option": secret},
            {"max_attempts": 0},
            {"run_at": "tomorrow"},
        ]:
            with pytest.raises(InvalidInput) as err:
                jq.enqueue("leaky", {"password": secret}, **bad)
            texts.append(str(err.value))
        with pytest.raises(InvalidInput) as err:
            jq.enqueue("leaky", {"password": secret, "pad": "x" * 300_000})
        texts.append(str(err.value))
        texts += [json.dumps(jq.stats(), default=str), json.dumps(jq.metrics(), default=str)]
        texts += [json.dumps(jq.health(), default=str)]
        from jobqueue import exporter

        texts.append(exporter.render(jq))  # what Prometheus scrapes: labels and values
        redis_url = os.environ.get("REDIS_URL")
        if redis_url:  # the Redis mirror of the same figures (the scan below reads it)
            from jobqueue.mirror import RedisMirror

            mirror = RedisMirror(redis_url, prefix=f"jqtest:{uuid.uuid4().hex[:8]}:")
            assert mirror.refresh(jq, force=True)
        # a dead letter's errors and last_error (its payload column is the input, kept by design)
        texts += [json.dumps([(d["errors"], d["last_error"]) for d in jq.dead_letters()], default=str)]
    letters = db.execute("SELECT errors::text AS e, last_error FROM jobqueue.dead_letters").fetchall()
    texts += [r["e"] + str(r["last_error"]) for r in letters]
    texts += [json.dumps(r["detail"]) for r in db.execute("SELECT detail FROM jobqueue.job_event").fetchall()]
    notices = [n.payload for n in listener.notifies(timeout=0.5)]
    assert notices, "the test saw no notification at all"
    texts += notices
    logged = [caplog.text] + [repr(vars(r)) for r in caplog.records]
    assert len(caplog.records) > 5, "the worker logged (almost) nothing at DEBUG"
    for text in texts + logged:
        assert secret not in text, text[:500]
    # Redis (the mirror written above, and anything else there): nothing holds the secret
    try:
        import redis
    except ImportError:
        return
    try:
        client = redis.Redis.from_url(redis_url or "redis://127.0.0.1:6379/0", socket_timeout=2)
        keys = list(client.scan_iter(count=1000))
    except redis.RedisError:
        return
    mirrored = 0
    for key in keys:
        assert secret.encode() not in key
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key)]
        elif kind == b"hash":
            values = [*client.hkeys(key), *client.hvals(key)]
        elif kind == b"set":
            values = list(client.smembers(key))
        else:
            continue
        mirrored += key.startswith(b"jqtest:")
        for value in values:
            assert value is None or secret.encode() not in value, key
    if redis_url:
        assert mirrored >= 3, "the mirror wrote nothing to scan"
        client.delete(*[k for k in keys if k.startswith(mirror.prefix.encode())])


# -- SEC-07 backpressure ----------------------------------------------------------------------


def test_backpressure(db: psycopg.Connection[Any], connect: Connect, login_role: Callable[[str], str]) -> None:
    """SEC-07: eight producers race into a capped queue: 53400 past the cap, depth never over it;
    other queues keep accepting."""
    import threading

    limit, batch = 30, 4
    db.execute("SELECT jobqueue.configure_queue('capped', %s)", (json.dumps({"max_size": limit}),))
    role = login_role("jobqueue_producer")
    conns = [connect(user=role) for _ in range(8)]
    barrier = threading.Barrier(len(conns))
    accepted: list[int] = []
    refused: list[psycopg.Error] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    jobs = json.dumps([{"type": "t", "queue": "capped"}] * batch)

    def produce(conn: psycopg.Connection[Any]) -> None:
        try:
            barrier.wait()
            full = 0
            while full < 3:
                try:
                    n = len(conn.execute("SELECT jobqueue.enqueue_many(%s::jsonb)", (jobs,)).fetchall())
                    with lock:
                        accepted.append(n)
                except psycopg.errors.ConfigurationLimitExceeded as exc:
                    full += 1
                    with lock:
                        refused.append(exc)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(c,)) for c in conns]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    depth = db.execute("SELECT count(*) AS n FROM jobqueue.job WHERE queue = 'capped'").fetchone()["n"]  # type: ignore[index]
    assert depth == sum(accepted) and depth <= limit, (depth, limit)  # within limit (+ batch, the plan's bound)
    assert depth > limit - batch  # the cap was reached, not undershot
    exc = refused[0]
    assert exc.diag.column_name == "queue" and '"capped" is full (max_size 30' in str(exc)
    producer = conns[0]
    other = producer.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'other') AS id").fetchone()
    assert other is not None and other["id"] > 0
    # the refused enqueues wrote nothing: every job and event row belongs to an accepted batch
    # (job events only: configuring the queue wrote a queue change, job_id NULL)
    events = db.execute(
        "SELECT count(*) AS n FROM jobqueue.job_event WHERE queue = 'capped' AND job_id IS NOT NULL"
    ).fetchone()
    assert events is not None and events["n"] == depth


def test_backpressure_costs_nothing_when_no_queue_is_capped(db: psycopg.Connection[Any]) -> None:
    """SEC-07: with no cap anywhere, enqueue does not lock or touch the queue row."""
    db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'free')")
    before = db.execute("SELECT xmin::text AS x FROM jobqueue.queue WHERE name = 'free'").fetchone()
    db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'free')")
    assert db.execute("SELECT xmin::text AS x FROM jobqueue.queue WHERE name = 'free'").fetchone() == before
    db.execute("SELECT jobqueue.configure_queue('free', '{\"max_size\": 10}')")
    capped = db.execute("SELECT xmin::text AS x FROM jobqueue.queue WHERE name = 'free'").fetchone()
    db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'free')")
    assert db.execute("SELECT xmin::text AS x FROM jobqueue.queue WHERE name = 'free'").fetchone() != capped


# -- SEC-08 audit -----------------------------------------------------------------------------


def test_audit_append_only(db: psycopg.Connection[Any], connect: Connect, login_role: Callable[[str], str]) -> None:
    """SEC-08: every transition writes exactly one job_event row whose actor is the caller's login
    role (session_user, also inside the definer functions); nobody may rewrite the trail."""
    names = {k: login_role(f"jobqueue_{k}") for k in ("producer", "worker", "admin")}
    p, w, a = (connect(user=names[k]) for k in ("producer", "worker", "admin"))
    P, W, A = names["producer"], names["worker"], names["admin"]

    def enq(**kw: Any) -> int:
        query, params = api("enqueue", "audit.job", **kw)
        return int(p.execute(query, params).fetchone()["enqueue"])  # type: ignore[index]

    def lease(queue: str = "default") -> dict[str, Any]:
        got = w.execute("SELECT id, token FROM jobqueue.claim(ARRAY[%s], 'w', 1)", (queue,)).fetchall()
        assert len(got) == 1
        return dict(got[0])

    def call(conn: psycopg.Connection[Any], fn: str, *args: Any) -> Any:
        query, params = api(fn, *args)
        row = conn.execute(query, params).fetchone()
        return None if row is None else next(iter(row.values()))

    expected: dict[int, list[tuple[str | None, str | None, str]]] = {}
    j1 = enq()
    t = lease()["token"]
    assert call(w, "fail", j1, t, "x", "transient", timedelta(0)) == "retrying"
    t = lease()["token"]
    db.execute("UPDATE jobqueue.job SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (j1,))
    call(w, "reconcile")
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '1 second' WHERE id = %s", (j1,))
    t = lease()["token"]
    assert call(w, "snooze", j1, t, timedelta(0)) == "snoozed"
    t = lease()["token"]
    assert call(w, "heartbeat", j1, t) == "ok"  # not a transition: no event
    assert call(w, "release", j1, t) == "released"
    t = lease()["token"]
    assert call(w, "fail", j1, t, "x", "permanent") == "dead_letter"
    assert call(a, "retry", j1) == j1
    t = lease()["token"]
    assert call(w, "complete", j1, t) == "completed"
    expected[j1] = [
        (None, "pending", P), ("pending", "processing", W), ("processing", "retrying", W),
        ("retrying", "processing", W), ("processing", "retrying", W), ("retrying", "processing", W),
        ("processing", "pending", W), ("pending", "processing", W), ("processing", "pending", W),
        ("pending", "processing", W), ("processing", "dead_letter", W), ("dead_letter", "pending", A),
        ("pending", "processing", W), ("processing", "completed", W),
    ]
    j2 = enq(queue="q2")
    assert call(p, "cancel", j2) == "cancelled"
    expected[j2] = [(None, "pending", P), ("pending", "cancelled", P)]
    j3 = enq(queue="q3", max_attempts=1)
    assert call(w, "fail", j3, lease("q3")["token"], "x", "transient") == "dead_letter"
    db.execute("UPDATE jobqueue.dead_letter SET finished_at = now() - interval '2 days' WHERE id = %s", (j3,))
    assert call(a, "archive_dead_letters", 1) == 1
    assert call(a, "purge_dead_letters", Jsonb({"ids": [j3]})) == 1
    expected[j3] = [(None, "pending", P), ("pending", "processing", W), ("processing", "dead_letter", W),
                    ("dead_letter", "archived", A), ("archived", None, A)]
    j4 = enq(queue="q4")
    t = lease("q4")["token"]
    assert call(a, "cancel", j4) == "cancel_requested"  # not a transition: no event
    assert call(w, "fail", j4, t, "stopped", "cancelled") == "cancelled"
    expected[j4] = [(None, "pending", P), ("pending", "processing", W), ("processing", "cancelled", W)]
    j5 = enq(queue="q5", max_attempts=1)
    assert call(w, "fail", j5, lease("q5")["token"], "x", "transient") == "dead_letter"
    assert [r["redrive"] for r in a.execute("SELECT * FROM jobqueue.redrive(%s)", (Jsonb({"ids": [j5]}),))] == [j5]
    expected[j5] = [(None, "pending", P), ("pending", "processing", W), ("processing", "dead_letter", W),
                    ("dead_letter", "pending", A)]
    for job_id, trail in expected.items():
        got = events(db, job_id)
        assert [(r["from_state"], r["to_state"], r["actor"]) for r in got] == trail, job_id
    owner = db.execute("SELECT current_user AS u").fetchone()["u"]  # type: ignore[index]
    assert db.execute("SELECT count(*) AS n FROM jobqueue.job_event WHERE actor = %s", (owner,)).fetchone() == {"n": 0}

    before = db.execute("SELECT count(*) AS n, max(id) AS m FROM jobqueue.job_event").fetchone()
    for conn in (p, w, a):
        for statement in (
            "UPDATE jobqueue.job_event SET actor = 'x'",
            "DELETE FROM jobqueue.job_event",
            "TRUNCATE jobqueue.job_event",
            "INSERT INTO jobqueue.job_event (job_id, queue) VALUES (1, 'q')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    for statement in ("UPDATE jobqueue.job_event SET actor = 'x'", "DELETE FROM jobqueue.job_event",
                      "TRUNCATE jobqueue.job_event"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            db.execute(statement)  # the owner: refused by the trigger
    # the pruning flag alone does not open it to the owner outside the retention step
    db.execute("SET jobqueue.pruning = 'on'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        db.execute("UPDATE jobqueue.job_event SET actor = 'x'")
    db.execute("RESET jobqueue.pruning")
    assert db.execute("SELECT count(*) AS n, max(id) AS m FROM jobqueue.job_event").fetchone() == before
