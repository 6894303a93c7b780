"""Acknowledgements the database refuses are retried, never dropped (issue 12, item 7).

Real refusals, no mocks: a trigger in the test's database makes the statements that finish
a job fail with a database error that is neither an outage nor a fenced answer (SQLSTATE
26000, what a transaction pooler's lost prepared statement gives), the first N times
(a sequence counts them: nextval is not rolled back with the failed statement), or always.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue
from tests.chaos.harness import NO_BACKOFF, Workers, log_records, scalar, wait_for

pytestmark = pytest.mark.timeout(300)

FAULTS = """
CREATE SEQUENCE ack_faults;
CREATE TABLE ack_fault_limit (n bigint NOT NULL);
INSERT INTO ack_fault_limit VALUES (%(limit)s);
CREATE FUNCTION refuse_ack() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('public.ack_faults') <= (SELECT n FROM public.ack_fault_limit) THEN
        RAISE EXCEPTION 'injected: prepared statement "_pg3_7" does not exist' USING ERRCODE = '26000';
    END IF;
    RETURN NEW;
END $$;
-- complete / complete_many move the job to job_history; fail, snooze and release update it.
CREATE TRIGGER refuse_complete BEFORE INSERT ON jobqueue.job_history
    FOR EACH ROW WHEN (NEW.state = 'completed') EXECUTE FUNCTION refuse_ack();
CREATE TRIGGER refuse_fail BEFORE UPDATE ON jobqueue.job
    FOR EACH ROW WHEN (OLD.state = 'processing' AND NEW.state <> 'processing') EXECUTE FUNCTION refuse_ack();
"""


def refuse_acks(db: psycopg.Connection[Any], times: int) -> None:
    db.execute(psycopg.sql.SQL(FAULTS.replace("%(limit)s", "{}")).format(psycopg.sql.Literal(times)))


def actions(path: Path, action: str) -> list[dict[str, Any]]:
    return [r for r in log_records(path) if r.get("action") == action]


def test_refused_completions_are_retried(workers: Workers, db: psycopg.Connection[Any], db_url: str) -> None:
    """The first 4 completion statements fail: the worker retries them; every job completes
    after running once, and the burst worker exits 0 with nothing left processing."""
    refuse_acks(db, 4)
    with JobQueue(db_url) as jq:
        ids = jq.enqueue_many(
            [{"type": "chaos.work", "payload": {"n": i}, "retry_policy": NO_BACKOFF} for i in range(5)]
        )
    worker = workers.start("-c", "5", "--burst", "--poll-interval", "0.2", "--reconcile-interval", "0")
    assert worker.wait(120) == 0, Path(worker.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
    assert scalar(db, "SELECT nextval('ack_faults')") > 4, "the fault was never hit: the test tested nothing"
    states = scalar(db, "SELECT array_agg(state::text ORDER BY id) FROM jobqueue.jobs WHERE id = ANY(%s)", (ids,))
    assert states == ["completed"] * 5
    assert scalar(db, "SELECT count(*) FROM exec_ledger") == 5, "a job ran twice: its completion was dropped"
    log = Path(worker.log_path)  # type: ignore[attr-defined]
    assert actions(log, "ack_retry"), "no refusal was logged"
    assert actions(log, "ack_undelivered") == []


def test_refused_failures_are_retried(workers: Workers, db: psycopg.Connection[Any], db_url: str) -> None:
    """The same for `fail` (a handler that raised): its acknowledgement gets through after 3
    refusals, the retry runs, and each job runs exactly twice."""
    refuse_acks(db, 3)
    with JobQueue(db_url) as jq:
        ids = jq.enqueue_many(
            [{"type": "chaos.flaky", "payload": {"fail_times": 1}, "retry_policy": NO_BACKOFF} for _ in range(3)]
        )
    worker = workers.start("-c", "3", "--burst", "--poll-interval", "0.2", "--reconcile-interval", "0")
    assert worker.wait(120) == 0, Path(worker.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
    states = scalar(db, "SELECT array_agg(state::text ORDER BY id) FROM jobqueue.jobs WHERE id = ANY(%s)", (ids,))
    assert states == ["completed"] * 3
    runs = db.execute("SELECT job_id, count(*) AS n FROM exec_ledger GROUP BY job_id ORDER BY job_id").fetchall()
    assert [r["n"] for r in runs] == [2, 2, 2], runs
    assert actions(Path(worker.log_path), "ack_retry")  # type: ignore[attr-defined]


def test_undeliverable_acks_make_a_burst_worker_fail(
    workers: Workers, db: psycopg.Connection[Any], db_url: str
) -> None:
    """Completions refused for good: after a lease's worth of retries the worker gives them
    up (their leases run out; reconcile hands the jobs back) and the burst worker exits 1,
    naming the jobs."""
    refuse_acks(db, 1_000_000)
    with JobQueue(db_url) as jq:
        ids = jq.enqueue_many(
            [{"type": "chaos.work", "payload": {"n": i}, "retry_policy": NO_BACKOFF} for i in range(3)]
        )
    worker = workers.start(
        "-c", "3", "--burst", "--poll-interval", "0.2", "--reconcile-interval", "0", "--visibility-timeout", "2"
    )
    assert worker.wait(120) == 1
    log = Path(worker.log_path)  # type: ignore[attr-defined]
    assert sorted(r["job_id"] for r in actions(log, "ack_undelivered")) == sorted(ids)
    [summary] = actions(log, "worker_undelivered")
    assert summary["job_ids"] == sorted(ids)
    assert all(str(i) in summary["message"] for i in ids)
    # Nothing is lost: once the refusals stop, the expired leases go back and the jobs finish.
    db.execute("UPDATE ack_fault_limit SET n = 0")
    expired: list[int] = []
    with JobQueue(db_url) as jq:
        wait_for(
            lambda: expired.append(jq.reconcile()["expired_leases"]) or sum(expired) == 3, 30, "the leases to expire"
        )
    again = workers.start("-c", "3", "--burst", "--poll-interval", "0.2", "--reconcile-interval", "0")
    assert again.wait(120) == 0
    states = scalar(db, "SELECT array_agg(state::text ORDER BY id) FROM jobqueue.jobs WHERE id = ANY(%s)", (ids,))
    assert states == ["completed"] * 3
