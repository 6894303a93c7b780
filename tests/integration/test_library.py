"""The Python library on a real PostgreSQL: enqueue (also transactional), reads, admin, worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from jobqueue import (
    Cancel,
    InvalidInput,
    JobContext,
    JobNotFound,
    JobQueue,
    JobState,
    Priority,
    Retry,
    Snooze,
    WorkerConfig,
    current_job,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def jq(db_url: str) -> Iterator[JobQueue]:
    queue = JobQueue(db_url, pool_size=4)
    yield queue
    queue.close()


def count_jobs(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) AS n FROM jobqueue.jobs").fetchone()
    assert row is not None
    return int(row["n"])


def burst(jq: JobQueue, **options: Any) -> None:
    """Run a worker in this thread until nothing is left to claim."""
    config = WorkerConfig(
        burst=True, install_signal_handlers=False, poll_interval_s=0.05, reconcile_interval_s=0, **options
    )
    assert jq.run_worker(config) == 0


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_with_options_is_visible_on_the_job(jq: JobQueue) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)
    job_id = jq.enqueue(
        "email.send",
        {"to": "a@example.com"},
        queue="email",
        priority=Priority.HIGH,
        run_at=run_at,
        max_attempts=7,
        tags=["x", "y"],
        metadata={"trace": "abc"},
        tenant_id="t1",
        user_id="u1",
        timeout=timedelta(seconds=90),
        visibility_timeout=45,
    )
    job = jq.get(job_id)
    assert job.state is JobState.PENDING
    assert (job.queue, job.type, job.payload) == ("email", "email.send", {"to": "a@example.com"})
    assert job.priority == 8 and job.max_attempts == 7
    assert job.tags == ["x", "y"] and job.metadata == {"trace": "abc"}
    assert job.tenant_id == "t1" and job.user_id == "u1"
    assert abs((job.run_at - run_at).total_seconds()) < 0.001


def test_priority_names_and_unique_keys(jq: JobQueue) -> None:
    first = jq.enqueue("t", {}, priority="critical", unique_key="k1")
    assert jq.get(first).priority == 10
    assert jq.enqueue("t", {"other": True}, unique_key="k1") == first


def test_sql_errors_come_back_as_invalid_input_naming_the_field(jq: JobQueue, db: psycopg.Connection[Any]) -> None:
    before = count_jobs(db)
    for options, field in [
        ({"priority": 11}, "priority"),
        ({"queue": "bad queue!"}, "queue"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"delay": -5}, "delay"),
    ]:
        with pytest.raises(InvalidInput) as err:
            jq.enqueue("t", {}, **options)
        assert err.value.field == field, (options, str(err.value))
        assert field in str(err.value)
    assert count_jobs(db) == before


def test_enqueue_many_small_and_copy_paths_are_all_or_nothing(jq: JobQueue, db: psycopg.Connection[Any]) -> None:
    ids = jq.enqueue_many([{"type": "a", "payload": {"n": i}} for i in range(10)])
    assert len(ids) == 10 and ids == sorted(ids)
    big = jq.enqueue_many([{"type": "b", "payload": {"n": i}, "priority": i % 11} for i in range(2500)])
    assert len(big) == 2500
    assert jq.get(big[7]).payload == {"n": 7} and jq.get(big[7]).priority == 7
    before = count_jobs(db)
    bad = [{"type": "c", "payload": {}} for _ in range(1500)]
    bad[1200]["priority"] = 99
    with pytest.raises(InvalidInput):
        jq.enqueue_many(bad)
    assert count_jobs(db) == before


# -- CLAIM-04: transactional enqueue --------------------------------------------------------


def test_transactional_enqueue_with_psycopg(jq: JobQueue, db_url: str, connect: Callable[..., Any]) -> None:
    other = connect()
    with psycopg.connect(db_url) as conn:
        rolled_back = jq.enqueue("tx.job", {"n": 1}, connection=conn)
        conn.rollback()
        with pytest.raises(JobNotFound):
            jq.get(rolled_back)

        pending = jq.enqueue("tx.job", {"n": 2}, connection=conn)
        # Not committed yet: another session cannot see or claim it.
        assert other.execute("SELECT count(*) AS n FROM jobqueue.claim(ARRAY['default'], 'w', 10)").fetchone()["n"] == 0
        conn.commit()
    claimed = other.execute("SELECT id FROM jobqueue.claim(ARRAY['default'], 'w', 10)").fetchall()
    assert [row["id"] for row in claimed] == [pending]


@pytest.mark.parametrize("kind", ["connection", "session"])
def test_transactional_enqueue_with_sqlalchemy(jq: JobQueue, db_url: str, kind: str) -> None:
    engine = sqlalchemy.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE orders (id int PRIMARY KEY)")
            conn.commit()

        def enqueue_in(handle: Any, order: int) -> int:
            handle.execute(sqlalchemy.text("INSERT INTO orders VALUES (:id)"), {"id": order})
            return jq.enqueue("order.ship", {"order": order}, connection=handle)

        if kind == "session":
            with Session(engine) as session:
                gone = enqueue_in(session, 1)
                session.rollback()
                kept = enqueue_in(session, 2)
                session.commit()
        else:
            with engine.connect() as conn:
                gone = enqueue_in(conn, 1)
                conn.rollback()
                kept = enqueue_in(conn, 2)
                conn.commit()
        with pytest.raises(JobNotFound):
            jq.get(gone)
        assert jq.get(kept).payload == {"order": 2}
        with engine.connect() as conn:
            assert [r[0] for r in conn.exec_driver_sql("SELECT id FROM orders")] == [2]
    finally:
        engine.dispose()


def test_task_enqueue_inside_a_transaction(jq: JobQueue, db_url: str) -> None:
    @jq.task(name="greet", queue="greetings")
    def greet(name: str) -> str:
        return f"hello {name}"

    with psycopg.connect(db_url) as conn:
        job_id = greet.with_options(connection=conn, priority="low").enqueue(name="ada")
        conn.rollback()
    with pytest.raises(JobNotFound):
        jq.get(job_id)
    job_id = greet.enqueue("bob")
    assert (jq.get(job_id).queue, jq.get(job_id).payload) == ("greetings", {"name": "bob"})


# -- worker, in-process ---------------------------------------------------------------------


def test_worker_runs_sync_and_async_handlers_and_stores_output(jq: JobQueue) -> None:
    seen: list[tuple[int, int]] = []

    @jq.task(name="sync.add")
    def add(a: int, b: int) -> int:
        ctx = current_job()
        seen.append((ctx.id, ctx.attempt))
        return a + b

    @jq.task(name="async.mul")
    async def mul(ctx: JobContext, a: int, b: int) -> dict[str, int]:
        await asyncio.sleep(0.01)
        ctx.log("multiplying")
        ctx.progress(50)
        return {"product": a * b}

    ids = [add.enqueue(1, 2), mul.enqueue(a=3, b=4), add.enqueue(a=5, b=6)]
    burst(jq, concurrency=4)
    jobs = [jq.get(i) for i in ids]
    assert [j.state for j in jobs] == [JobState.COMPLETED] * 3
    assert [j.output for j in jobs] == [3, {"product": 12}, 11]
    assert sorted(seen) == sorted([(ids[0], 1), (ids[2], 1)])
    assert [line["message"] for line in jq.logs(ids[1])] == ["multiplying"]
    assert float(jobs[1].progress) == 50


def test_worker_hands_the_context_to_a_first_parameter_named_ctx(jq: JobQueue) -> None:
    """Issue 14 item 9: `def f(ctx, x)` (no annotation) gets the job context from a worker."""
    seen: list[tuple[bool, int]] = []

    @jq.task(name="ctx.plain")
    def plain(ctx, x: int) -> int:  # type: ignore[no-untyped-def]
        seen.append((isinstance(ctx, JobContext), ctx.id))
        return x * 2

    job_id = plain.enqueue(x=21)
    burst(jq)
    assert jq.get(job_id).state == JobState.COMPLETED and jq.get(job_id).output == 42
    assert seen == [(True, job_id)]


def test_handler_errors_follow_the_error_class(jq: JobQueue) -> None:
    calls: dict[str, int] = {"flaky": 0}

    @jq.task(name="flaky", retry={"strategy": "fixed", "initial_delay": 0, "jitter": 0})
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionResetError("upstream reset")
        return "ok"

    @jq.task(name="broken")
    def broken() -> None:
        raise ValueError("no such customer")

    ok, bad = flaky.enqueue(), broken.enqueue()
    for _ in range(5):
        burst(jq)
        if jq.get(ok).state is JobState.COMPLETED:
            break
    assert jq.get(ok).state is JobState.COMPLETED and calls["flaky"] == 3
    dead = jq.get(bad)
    assert dead.state is JobState.DEAD_LETTER
    letters = jq.dead_letters()
    assert [d["id"] for d in letters] == [bad]
    assert letters[0]["reason"] == "permanent_error"
    assert "ValueError: no such customer" in str(letters[0]["errors"])


def test_retry_snooze_and_cancel_from_a_handler(jq: JobQueue) -> None:
    @jq.task(name="wants.retry")
    def wants_retry() -> None:
        raise Retry(after=timedelta(hours=1))

    @jq.task(name="wants.snooze")
    def wants_snooze() -> None:
        raise Snooze(3600)

    @jq.task(name="wants.cancel")
    def wants_cancel() -> None:
        raise Cancel("order withdrawn")

    r, s, c = wants_retry.enqueue(), wants_snooze.enqueue(), wants_cancel.enqueue()
    burst(jq)
    assert jq.get(r).state is JobState.RETRYING
    assert jq.get(r).run_at > datetime.now(UTC) + timedelta(minutes=50)
    snoozed = jq.get(s)
    assert snoozed.state is JobState.PENDING and snoozed.attempt == 0
    assert snoozed.run_at > datetime.now(UTC) + timedelta(minutes=50)
    assert jq.get(c).state is JobState.CANCELLED


def test_custom_retry_callable_decides_the_delay(jq: JobQueue) -> None:
    @jq.task(name="custom.retry", retry=lambda attempt, exc: 7200 * attempt)
    def failing() -> None:
        raise RuntimeError("try later")

    job_id = failing.enqueue()
    burst(jq)
    job = jq.get(job_id)
    assert job.state is JobState.RETRYING
    assert timedelta(minutes=110) < job.run_at - datetime.now(UTC) < timedelta(minutes=121)


def test_timeout_abandons_a_stuck_handler_and_fails_the_attempt(jq: JobQueue) -> None:
    release = threading.Event()

    @jq.task(name="stuck", timeout=0.3, max_attempts=1)
    def stuck() -> None:
        release.wait(30)

    @jq.task(name="quick")
    def quick() -> str:
        return "done"

    stuck_id, quick_id = stuck.enqueue(), quick.enqueue()
    try:
        burst(jq, concurrency=1)  # one slot: the quick job still runs once the stuck one is abandoned
    finally:
        release.set()
    job = jq.get(stuck_id)
    assert job.state is JobState.DEAD_LETTER
    assert "timed out" in str(job.errors) and "timeout" in str(job.errors)
    assert jq.get(quick_id).state is JobState.COMPLETED


def test_cancelling_a_running_job_reaches_its_handler(jq: JobQueue) -> None:
    started = threading.Event()

    @jq.task(name="long.cancellable", visibility_timeout=3)
    def long_job(ctx: JobContext) -> str:
        started.set()
        if not ctx.wait_cancelled(timeout=20):
            return "finished"
        raise Cancel("stopped on request")

    job_id = long_job.enqueue()
    runner = threading.Thread(target=burst, args=(jq,))
    runner.start()
    assert started.wait(10)
    assert jq.cancel(job_id, "user asked") == "cancel_requested"
    runner.join(30)
    assert not runner.is_alive()
    assert jq.get(job_id).state is JobState.CANCELLED


def test_admin_calls(jq: JobQueue) -> None:
    waiting = jq.enqueue("admin.t", {}, queue="q1", delay=3600)
    assert jq.cancel(waiting) == "cancelled"
    jq.pause("q1")
    paused = jq.enqueue("admin.t", {}, queue="q1")
    stats = {row["queue"]: row for row in jq.stats()}
    assert stats["q1"]["paused"] and stats["q1"]["pending"] == 1
    jq.resume("q1")
    settings = jq.configure_queue("q1", max_size=5, visibility_timeout=60)
    assert settings["max_size"] == 5
    assert [j.id for j in jq.list(queue="q1", states=["pending"])] == [paused]
    assert jq.list(queue="q1", limit=1)[0].id == paused
    assert [j.id for j in jq.list(queue="q1", before_id=paused)] == [waiting]
    summary = jq.reconcile(dry_run=True)
    assert isinstance(summary, dict)
    with pytest.raises(JobNotFound):
        jq.get(10**12)


def test_pool_is_back_within_seconds_of_a_long_outage(db_url: str) -> None:
    """After an outage of 16 s, psycopg_pool's own back-off (1, 2, 4, 8, 16 s ...) would try
    again only ~15 s after the server is back, and every caller would wait for it (CHAOS-03
    saw workers idle for 29 s after 5 s restarts). The capped back-off tries every 1-2 s,
    so the first call after the server is back waits at most about that long.

    Checked to fail: with jobqueue.pool.Pool._add_connection removed, the call after healing
    times out (pool_timeout 8 s) with DatabaseUnavailable."""
    from jobqueue import DatabaseUnavailable
    from tests.support.proxy import proxied

    proxy, url = proxied(db_url)
    try:
        with JobQueue(url, pool_size=1, pool_timeout=8) as jq:
            assert jq.queues() is not None  # the pool holds a live connection
            proxy.refuse()  # the server "goes down": the connection dies, reconnects are refused
            with pytest.raises(DatabaseUnavailable):
                jq.queues()
            down_until = time.monotonic() + 16
            while time.monotonic() < down_until:  # the pool's back-off grows meanwhile
                time.sleep(0.5)
            proxy.heal()
            healed = time.monotonic()
            jq.queues()
            waited = time.monotonic() - healed
    finally:
        proxy.close()
    assert waited < 5, f"the first call after the outage waited {waited:.1f} s for a connection"


def test_idle_pool_is_usable_at_once_after_its_connections_died(db_url: str) -> None:
    """An idle pool of six whose connections all died (a server restart): psycopg_pool met
    them one by one, pausing 1, 2, 4, 8, 16 s between failed checks, and the first call after
    the restart timed out although the server was back. The first failed check now sweeps
    the whole pool at once.

    Checked to fail: with jobqueue.pool.Pool._check_idle's sweep removed, the call raises
    DatabaseUnavailable after pool_timeout (8 s)."""
    from jobqueue import pool as pool_module
    from tests.support.proxy import proxied

    proxy, url = proxied(db_url)
    try:
        with JobQueue(url, pool_size=6, pool_timeout=8) as jq:
            held = [jq.pool.getconn() for _ in range(6)]
            for conn in held:
                conn.execute("SELECT 1")
                jq.pool.putconn(conn)
            for conn in held:  # idle for longer than the pool's ping threshold
                conn._jobqueue_idle_since -= pool_module.POOL_CHECK_IDLE_S + 1  # type: ignore[attr-defined]
            proxy.refuse()  # every connection dies ...
            proxy.heal()  # ... and the server is back at once
            began = time.monotonic()
            assert jq.queues() is not None
            waited = time.monotonic() - began
    finally:
        proxy.close()
    assert waited < 4, f"the first call after the restart waited {waited:.1f} s"
