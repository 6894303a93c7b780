"""The real worker (CLI subprocesses) under kills, pauses, signals and database faults.

CHAOS-01 (quick), CHAOS-03, CHAOS-04 (quick), FENCE-02 and SHUT-01 of RELIABILITY.md 4.3.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue import DatabaseUnavailable, JobQueue
from jobqueue.embedded import EmbeddedServer
from tests.chaos.harness import LEDGER_DDL, Workers, check_invariants, log_of, scalar, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def ledger_db(db: psycopg.Connection[Any], db_url: str) -> str:
    db.execute(LEDGER_DDL)
    return db_url


@pytest.fixture
def workers(ledger_db: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(ledger_db, tmp_path)
    yield pool
    pool.kill_all()


def enqueue_work(url: str, n: int, *, sleep_ms: tuple[int, int] = (0, 0), **options: Any) -> list[int]:
    rng = random.Random(n)
    with JobQueue(url) as jq:
        return jq.enqueue_many(
            [
                {"type": "chaos.work", "payload": {"n": i, "sleep_ms": rng.randint(*sleep_ms)}, **options}
                for i in range(n)
            ]
        )


def executions(db: psycopg.Connection[Any]) -> int:
    return int(scalar(db, "SELECT count(*) FROM exec_ledger"))


def done(db: psycopg.Connection[Any], ids: list[int]) -> bool:
    n = scalar(db, "SELECT count(*) FROM jobqueue.jobs WHERE state = 'completed' AND id = ANY(%s)", (ids,))
    return bool(n == len(ids))


# -- SHUT-01 ---------------------------------------------------------------------------------


def test_sigterm_graceful(workers: Workers, db: psycopg.Connection[Any], ledger_db: str) -> None:
    """SIGTERM with 8 jobs in flight: short ones finish, long ones are handed back at once."""
    worker = workers.start(
        "-c", "8", "--shutdown-timeout", "2", "--visibility-timeout", "600", "--reconcile-interval", "0"
    )
    with JobQueue(ledger_db) as jq:
        short = [jq.enqueue("chaos.sleep", {"seconds": 0.5}) for _ in range(4)]
        long = [jq.enqueue("chaos.hold", {"seconds": 120}) for _ in range(4)]
        wait_for(lambda: executions(db) == 8, 30, "all 8 jobs to start")
        tokens = {
            row["id"]: row["token"]
            for row in db.execute("SELECT id, token FROM jobqueue.jobs WHERE id = ANY(%s)", (long,))
        }
        worker.send_signal(signal.SIGTERM)
        late = jq.enqueue("chaos.work", {"n": 1})
        assert worker.wait(30) == 0, log_of(worker)
        assert all(jq.get(i).state == "completed" for i in short)
        for job_id in long:
            job = jq.get(job_id)
            # Released: claimable now, not after the 600 s lease; the attempt is given back.
            assert job.state == "pending" and job.attempt == 0, job.row
            assert scalar(db, "SELECT run_at <= now() FROM jobqueue.jobs WHERE id = %s", (job_id,))
            assert scalar(db, "SELECT jobqueue.complete(%s, %s)", (job_id, tokens[job_id])) == "lease_lost"
        assert jq.get(late).state == "pending"  # nothing was claimed after the signal
    assert executions(db) == 8
    assert "worker_stopping" in log_of(worker) and "job_released" in log_of(worker)


def test_second_signal_exits_at_once(workers: Workers, db: psycopg.Connection[Any], ledger_db: str) -> None:
    worker = workers.start("-c", "1", "--shutdown-timeout", "300")
    with JobQueue(ledger_db) as jq:
        jq.enqueue("chaos.sleep", {"seconds": 60})
    wait_for(lambda: executions(db) == 1, 30, "the job to start")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # let the first signal be handled; the second must not wait for the job
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 128 + signal.SIGTERM


# -- FENCE-02 --------------------------------------------------------------------------------


def test_sigstop_pause_beyond_visibility_timeout(workers: Workers, db: psycopg.Connection[Any], ledger_db: str) -> None:
    """A paused worker's late completion is rejected; the job is completed once, by B."""
    a = workers.start("-c", "1", "--visibility-timeout", "2", "--reconcile-interval", "0")
    with JobQueue(ledger_db) as jq:
        job_id = jq.enqueue(
            "chaos.sleep", {"seconds": 1.5}, retry_policy={"strategy": "fixed", "initial_delay": 0, "jitter": 0}
        )
    wait_for(lambda: executions(db) == 1, 30, "A to start the job")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: scalar(db, "SELECT lease_expires_at < now() FROM jobqueue.jobs WHERE id = %s", (job_id,)),
            30,
            "A's lease to expire",
        )
        summary = scalar(db, "SELECT jobqueue.reconcile()")
        assert summary["expired_leases"] >= 1, summary
        b = workers.start("-c", "1", "--burst", "--reconcile-interval", "0")
        assert b.wait(60) == 0, log_of(b)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    first_token = scalar(db, "SELECT min(token) FROM exec_ledger")
    wait_for(lambda: "ack_rejected" in log_of(a), 30, "A's stale completion to be rejected")
    rows = db.execute(
        "SELECT token FROM jobqueue.job_event WHERE job_id = %s AND to_state = 'completed'", (job_id,)
    ).fetchall()
    assert len(rows) == 1 and rows[0]["token"] != first_token
    assert executions(db) == 2


# -- CHAOS-01 (quick) ----------------------------------------------------------------------


def test_kill9_workers(workers: Workers, db: psycopg.Connection[Any], ledger_db: str) -> None:
    """2,000 jobs, 3 workers x 4 slots, 20 SIGKILLs with respawn: nothing lost, nothing doubled."""
    ids = enqueue_work(ledger_db, 2000, sleep_ms=(0, 50))
    args = ("-c", "4", "--visibility-timeout", "2", "--reconcile-interval", "1", "--poll-interval", "0.5")
    live = [workers.start(*args) for _ in range(3)]
    rng = random.Random(1)
    kills = 0
    deadline = time.monotonic() + 300
    while kills < 20 and not done(db, ids):
        time.sleep(rng.uniform(0.2, 0.6))
        victim = live.pop(rng.randrange(len(live)))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        kills += 1
        live.append(workers.start(*args))
        assert time.monotonic() < deadline
    wait_for(lambda: done(db, ids), 300, "every job to complete", interval=0.5)
    for proc in live:
        assert proc.poll() is None, log_of(proc)  # no worker exited by itself
    figures = check_invariants(ledger_db, ids, kills=kills, slots_per_kill=4)
    print(f"CHAOS-01 quick: kills={kills} {figures}")


# -- CHAOS-04 (quick) ----------------------------------------------------------------------


def test_backend_terminate_storm(workers: Workers, db: psycopg.Connection[Any], ledger_db: str) -> None:
    """pg_terminate_backend on the workers' backends 5/s for 10 s: no loss, no double, no exit."""
    ids = enqueue_work(ledger_db, 1500, sleep_ms=(0, 20))
    live = [
        workers.start("-c", "4", "--visibility-timeout", "3", "--reconcile-interval", "1", "--poll-interval", "0.5")
        for _ in range(2)
    ]
    victims = 0
    end = time.monotonic() + 10
    while time.monotonic() < end:
        victims += scalar(
            db,
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND (application_name LIKE 'jq-worker-%%' "
            "OR application_name LIKE 'jobqueue-listen:%%') ORDER BY random() LIMIT 1) t",
        )
        time.sleep(0.2)
    assert victims > 20
    wait_for(lambda: done(db, ids), 300, "every job to complete", interval=0.5)
    for proc in live:
        assert proc.poll() is None, log_of(proc)
    figures = check_invariants(ledger_db, ids)
    print(f"CHAOS-04 quick: terminated={victims} {figures}")


# -- CHAOS-03 ------------------------------------------------------------------------------


@pytest.fixture
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(home=tmp_path_factory.mktemp("pg"))
    server.ensure_running()
    yield server
    server.stop("immediate")


def test_postgres_immediate_restart(private_server: EmbeddedServer, tmp_path: Path) -> None:
    """Three crash-restarts of PostgreSQL under load: workers survive, nothing is lost or doubled."""
    url = private_server.ensure_running()
    from jobqueue import migrations
    from jobqueue.config import DatabaseTarget

    migrations.upgrade(DatabaseTarget(url, "test"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LEDGER_DDL)
    pool = Workers(url, tmp_path)

    def completed() -> int:
        with psycopg.connect(url) as conn:
            return int(scalar(conn, "SELECT count(*) FROM jobqueue.jobs WHERE state = 'completed'"))

    try:
        ids = enqueue_work(url, 1500, sleep_ms=(0, 20))
        live = [pool.start("-c", "4", "--visibility-timeout", "3", "--reconcile-interval", "1",
                           "--poll-interval", "0.5") for _ in range(2)]
        recoveries = []
        for _ in range(3):
            wait_for(lambda: completed() > 0, 30, "work to be under way")
            private_server.stop("immediate")
            # While the server is down, producers get an error, never a silent drop.
            with pytest.raises(DatabaseUnavailable), JobQueue(url, pool_timeout=2) as jq:
                jq.enqueue("chaos.work", {"n": -1})
            time.sleep(2.0)
            private_server.ensure_running()  # returns once the server accepts connections
            back = time.monotonic()
            before = completed()
            with JobQueue(url) as jq:
                ids.append(jq.enqueue("chaos.work", {"n": -2}))
            wait_for(lambda n=before: completed() > n, 30, "the first completion after the restart", interval=0.1)
            recoveries.append(time.monotonic() - back)
        with psycopg.connect(url, row_factory=dict_row) as conn:
            wait_for(lambda: done(conn, ids), 300, "every job to complete", interval=0.5)
        for proc in live:
            assert proc.poll() is None, log_of(proc)
        figures = check_invariants(url, ids)
        print(f"CHAOS-03: restarts=3 first-completion-after-restart={[round(r, 1) for r in recoveries]} s {figures}")
        assert max(recoveries) <= 10, recoveries  # RELIABILITY CHAOS-03: first claim within 10 s
    finally:
        pool.kill_all()
