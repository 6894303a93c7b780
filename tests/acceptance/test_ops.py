"""OPS-02 (PR tier): no worker holds a transaction while a handler runs.

Real `jobqueue worker` processes run 2-second handlers while ``pg_stat_activity`` is sampled
every 100 ms. A worker that kept a transaction open across a handler would show a
transaction at least 2 s old; the limits are 1 s. A negative control then runs one handler
that does exactly that (``soak.leak``), to prove the sampler sees it. The full-size run
is in `make soak` (tests/soak).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue
from tests.chaos.harness import Workers, scalar, wait_for
from tests.support.activity import ActivitySampler

pytestmark = pytest.mark.timeout(120)

APP = "tests.support.soak_app:jq"
HANDLER_S = 2.0
LIMIT_S = 1.0


@pytest.fixture
def workers_app() -> str:
    """The soak app for tests/support/workers.py's `workers`."""
    return APP


def finished(db: psycopg.Connection[Any], ids: list[int]) -> bool:
    n = scalar(
        db, "SELECT count(*) FROM jobqueue.jobs WHERE state IN ('completed', 'dead_letter') AND id = ANY(%s)", (ids,)
    )
    return bool(n == len(ids))


def test_no_idle_in_transaction_workers(db: psycopg.Connection[Any], db_url: str, workers: Workers) -> None:
    """OPS-02: no worker backend idle in transaction > 1 s; no transaction open while a handler runs."""
    for name in ("ops-a", "ops-b"):
        workers.start("-c", "4", "--poll-interval", "0.2", "--reconcile-interval", "1", name=name)
    with JobQueue(db_url) as jq:
        ids = jq.enqueue_many([{"type": "soak.work", "payload": {"ms": int(HANDLER_S * 1000)}} for _ in range(16)])
        ids += jq.enqueue_many([{"type": "soak.work", "payload": {"ms": 5}} for _ in range(200)])
        with ActivitySampler(db_url, "jq-worker-ops-", idle_in_tx_limit_s=LIMIT_S, xact_limit_s=LIMIT_S) as clean:
            wait_for(lambda: finished(db, ids), 60, "the slow jobs")
        figures = clean.report.figures()
        print("OPS-02 quick:", figures)
        assert not clean.errors
        assert clean.report.samples >= 20
        # both workers' pooled sessions (and listeners) were in view
        assert len(clean.report.sessions) >= 4, clean.report.sessions
        assert clean.report.idle_in_tx_over == []
        assert clean.report.xact_over == []
        assert clean.report.max_held_xact_s < LIMIT_S

        # Negative control: a handler that holds a transaction on the worker's own pool.
        leak = jq.enqueue("soak.leak", {"seconds": HANDLER_S + 0.5})
        with ActivitySampler(db_url, "jq-worker-ops-", idle_in_tx_limit_s=LIMIT_S, xact_limit_s=LIMIT_S) as dirty:
            wait_for(lambda: finished(db, [leak]), 30, "the leaking job")
    print("OPS-02 negative control:", dirty.report.figures())
    assert dirty.report.idle_in_tx_over, "the sampler missed a worker idle in transaction"
    assert dirty.report.max_held_xact_s > HANDLER_S, "the sampler missed a transaction held through a handler"


VT_S = 2.0
RECONCILE_S = 1.0
POLL_S = 0.5
NO_DELAY = {"strategy": "fixed", "initial_delay": 0, "jitter": 0}


def test_lost_worker_job_is_reclaimed_within_vt_plus_reconcile(
    db: psycopg.Connection[Any], db_url: str, workers: Workers
) -> None:
    """RELIABILITY.md 4.1: a lost worker's job is claimable again within vt + R (+ claim latency).

    Worker A (vt 2 s) takes a long job; worker B (reconcile every 1 s, poll every 0.5 s, no
    LISTEN) is running; A is SIGKILLed. B must lease the job again within vt + R + poll + 1 s
    of the kill, measured on the database clock (the job has no retry delay).
    """
    a = workers.start("-c", "1", "--visibility-timeout", str(VT_S), "--reconcile-interval", "0", name="ops-lost-a")
    with JobQueue(db_url) as jq:
        # No retry delay: what is measured is the queue's recovery, not the back-off policy
        # (a lost attempt is a `timeout` failure; by default it waits 2 s +- jitter more).
        job_id = jq.enqueue("soak.work", {"ms": 60_000}, retry_policy=NO_DELAY)
    wait_for(
        lambda: scalar(db, "SELECT state::text FROM jobqueue.jobs WHERE id = %s", (job_id,)) == "processing",
        30,
        "A to take the job",
    )
    # B is up and polling before A dies, so its start-up is not counted.
    workers.start(
        "-c", "1", "--reconcile-interval", str(RECONCILE_S), "--poll-interval", str(POLL_S), "--no-listen",
        name="ops-lost-b",
    )  # fmt: skip
    wait_for(lambda: scalar(db, "SELECT count(*) FROM jobqueue.workers WHERE worker_id = 'ops-lost-b'"), 30, "B")
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(10)
    killed_at = scalar(db, "SELECT clock_timestamp()")
    bound = VT_S + RECONCILE_S + POLL_S + 1.0
    reclaimed_at = wait_for(
        lambda: scalar(
            db,
            "SELECT CASE WHEN count(*) >= 2 THEN max(at) END FROM jobqueue.job_event "
            "WHERE job_id = %s AND to_state = 'processing'",
            (job_id,),
        ),
        bound + 30,
        "B to lease the job again",
    )
    recovery = (reclaimed_at - killed_at).total_seconds()
    print(f"lost worker: job leased again {recovery:.2f} s after SIGKILL (bound vt + R + poll + 1 = {bound} s)")
    assert recovery <= bound
