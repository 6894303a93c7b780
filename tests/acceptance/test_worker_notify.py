"""LISTEN/NOTIFY is a hint: NOTIFY-01 to NOTIFY-05 with the real worker.

Each test sets the poll interval far longer than the test, so only a notification (or the
catch-up poll after a reconnect) can explain a job being picked up quickly. The bounds are
generous: they separate "woken" from "not woken", they do not measure speed (the
benchmark does).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue
from tests.chaos.harness import Workers, log_of, scalar, wait_for
from tests.support.proxy import proxied

pytestmark = pytest.mark.timeout(300)

NEVER_POLL = ("--poll-interval", "600", "--reconcile-interval", "0")


def listener_ready(db: psycopg.Connection[Any], name: str) -> bool:
    """The worker's listener is connected and has run LISTEN (not merely connected)."""
    return bool(
        scalar(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s "
            "AND query IN ('LISTEN jobqueue', 'SELECT 1')",
            (f"jobqueue-listen:{name}",),
        )
    )


def pickup_delays(db: psycopg.Connection[Any], ids: list[int]) -> list[float]:
    rows = db.execute(
        "SELECT extract(epoch FROM min(l.started_at) - j.created_at) AS delay FROM exec_ledger l "
        "JOIN jobqueue.jobs j ON j.id = l.job_id WHERE j.id = ANY(%s) GROUP BY j.id, j.created_at",
        (ids,),
    ).fetchall()
    return sorted(float(row["delay"]) for row in rows)


def test_wakeup_by_notify(workers: Workers, db: psycopg.Connection[Any], db_url: str) -> None:
    """NOTIFY-01: an idle worker that never polls picks up 100 one-by-one enqueues promptly."""
    workers.start("-c", "4", *NEVER_POLL, name="n1")
    wait_for(lambda: listener_ready(db, "n1"), 30, "the listener")
    time.sleep(0.5)  # let the start-up claim find nothing and the worker go idle
    with JobQueue(db_url) as jq:
        ids = []
        for i in range(100):
            ids.append(jq.enqueue("chaos.work", {"n": i}))
            time.sleep(0.01)
    wait_for(lambda: scalar(db, "SELECT count(*) FROM exec_ledger") == 100, 60, "all jobs to run")
    delays = pickup_delays(db, ids)
    p50, p99 = delays[49], delays[98]
    print(f"NOTIFY-01: pickup p50={p50 * 1000:.1f} ms p99={p99 * 1000:.1f} ms max={delays[-1] * 1000:.1f} ms")
    assert p50 < 0.5 and p99 < 2.5, delays  # far below the 600 s poll interval


def test_listener_reconnects_after_terminate(workers: Workers, db: psycopg.Connection[Any], db_url: str) -> None:
    """NOTIFY-02: kill the LISTEN backend; it comes back, and a job sent in the gap is run."""
    worker = workers.start("-c", "2", *NEVER_POLL, name="n2")
    wait_for(lambda: listener_ready(db, "n2"), 30, "the listener")
    time.sleep(0.3)
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = %s",
        ("jobqueue-listen:n2",),
    )
    with JobQueue(db_url) as jq:
        gap = jq.enqueue("chaos.work", {"n": 1})  # may land while nobody listens
        wait_for(lambda: listener_ready(db, "n2"), 15, "a new LISTEN backend")
        wait_for(lambda: jq.get(gap).state == "completed", 15, "the gap job (catch-up poll)")
        after = jq.enqueue("chaos.work", {"n": 2})
        wait_for(lambda: jq.get(after).state == "completed", 15, "a job after the reconnect")
    assert "listener_lost" in log_of(worker)
    assert worker.poll() is None


def test_half_open_listener_is_detected(workers: Workers, db: psycopg.Connection[Any], db_url: str) -> None:
    """NOTIFY-03: the listener's connection is black-holed; it is replaced, and polling covers."""
    proxy, listen_url = proxied(db_url)
    try:
        worker = workers.start(
            "-c", "2", "--poll-interval", "2", "--reconcile-interval", "0", "--listen-url", listen_url, name="n3"
        )
        wait_for(lambda: listener_ready(db, "n3"), 30, "the listener")
        first_accepts = proxy.accepted
        proxy.blackhole()
        with JobQueue(db_url) as jq:
            during = jq.enqueue("chaos.work", {"n": 1})
            wait_for(lambda: jq.get(during).state == "completed", 10, "polling to cover the dead listener")
            began = time.monotonic()
            # The ping hangs on the black hole until tcp_user_timeout (10 s) fails it.
            try:
                wait_for(lambda: "listener_lost" in log_of(worker), 30, "the dead listener to be noticed")
            except AssertionError:
                worker.send_signal(signal.SIGUSR1)  # the worker dumps every thread's stack to its log
                time.sleep(1)
                raise AssertionError(f"the dead listener was not noticed; worker log:\n{log_of(worker)}") from None
            noticed = time.monotonic() - began
            proxy.heal()
            wait_for(lambda: proxy.accepted > first_accepts and listener_ready(db, "n3"), 30, "a new listener")
            after = jq.enqueue("chaos.work", {"n": 2})
            wait_for(lambda: jq.get(after).state == "completed", 10, "a job after recovery")
        print(f"NOTIFY-03: dead listener noticed {noticed:.1f} s after the black hole began")
        assert worker.poll() is None
    finally:
        proxy.close()


def test_poll_only_mode(workers: Workers, db: psycopg.Connection[Any], db_url: str) -> None:
    """NOTIFY-04: --no-listen runs every job by polling, and opens no LISTEN connection."""
    worker = workers.start("-c", "4", "--no-listen", "--poll-interval", "0.2", "--reconcile-interval", "0", name="n4")
    with JobQueue(db_url) as jq:
        ids = jq.enqueue_many([{"type": "chaos.work", "payload": {"n": i}} for i in range(200)])
        wait_for(
            lambda: (
                scalar(db, "SELECT count(*) FROM jobqueue.jobs WHERE state = 'completed' AND id = ANY(%s)", (ids,))
                == 200
            ),
            60,
            "all jobs by polling",
        )
    assert not listener_ready(db, "n4")
    assert worker.poll() is None


def test_notify_payload_contract(db_url: str, connect: Any) -> None:
    """NOTIFY-05: only the queue name, at most 64 bytes; one per transaction and queue."""
    listener = connect()
    listener.execute("LISTEN jobqueue")
    got: list[str] = []
    seen: list[str] = []  # every payload of the test, for the checks at the end

    def drain(expect: int) -> None:
        for notify in listener.notifies(timeout=2, stop_after=expect):
            got.append(notify.payload)
            seen.append(notify.payload)

    with JobQueue(db_url) as jq:
        jq.enqueue("t", {"secret": "s3cr3t-sentinel"}, queue="mail")
        drain(1)
        assert got == ["mail"]
        got.clear()
        jq.enqueue_many([{"type": "t", "queue": q, "payload": {"secret": "s3cr3t"}} for q in ["a", "b", "a", "a"]])
        drain(3)
        assert sorted(got) == ["a", "b"]
        got.clear()
        jq.enqueue("t", {}, queue="later", delay=3600)  # not runnable now: nobody to wake
        drain(1)
        assert got == []
    assert sorted(seen) == ["a", "b", "mail"]
    assert all(len(p.encode()) <= 64 and "s3cr3t" not in p for p in seen)


def test_worker_survives_a_raising_wakeup(workers: Workers, db: psycopg.Connection[Any], db_url: str) -> None:
    """Notifications for other queues do not wake work, and a flood of them is harmless."""
    workers.start("-c", "2", *NEVER_POLL, name="n6")
    wait_for(lambda: listener_ready(db, "n6"), 30, "the listener")
    stop = threading.Event()

    def flood() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_notify('jobqueue', 'some-other-queue')")

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        with JobQueue(db_url) as jq:
            job = jq.enqueue("chaos.work", {"n": 1})
            wait_for(lambda: jq.get(job).state == "completed", 15, "the job despite the flood")
    finally:
        stop.set()
        thread.join()
