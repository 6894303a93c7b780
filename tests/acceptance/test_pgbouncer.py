"""Through a real PgBouncer in transaction mode (issue 12, item 6; RELIABILITY.md 2.5).

Debian 12's PgBouncer 1.18 has no ``max_prepared_statements``: a statement psycopg prepared
on one server connection is looked for on another ("prepared statement _pg3_N does not
exist", "bind message supplies 5 parameters ..."). With server-side prepared statements off
(``--no-prepared-statements``, ``?prepared_statements=off``, JOBQUEUE_PREPARED_STATEMENTS=off
or ``JobQueue(prepared_statements=False)``) the producer and worker paths must be clean:
every job runs exactly once and nothing is logged as a database error.

PgBouncer is started by the test on a loopback port (tests/support/pgbouncer.py installs
Debian's package when it is missing and the tests run as root; otherwise they skip, saying
why). The server behind it is the test server: the PostgreSQL of $DATABASE_URL or the
embedded one on its Unix socket.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from jobqueue import JobQueue
from tests.chaos.harness import (
    Workers,
    check_invariants,
    log_records,
    record_enqueued,
    scalar,
    wait_for,
)
from tests.support.pgbouncer import PgBouncer, PgBouncerUnavailable, pgbouncer_binary, version

pytestmark = pytest.mark.timeout(300)

#: Worker log actions that mean a database call failed or an acknowledgement was lost.
ERROR_ACTIONS = {"db_error", "ack_error", "ack_rejected", "ack_undelivered"}


@pytest.fixture
def bouncer(db_url: str) -> Iterator[PgBouncer]:
    try:
        print(f"PgBouncer: {version(pgbouncer_binary())}")
        pgbouncer = PgBouncer(db_url, pool_mode="transaction", pool_size=4)
    except PgBouncerUnavailable as exc:
        pytest.skip(f"no PgBouncer to test through: {exc}")
    yield pgbouncer
    pgbouncer.close()


def dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


def problems(paths: list[Path]) -> list[str]:
    return [
        f"{path.stem}: {record.get('action')} {record.get('step', '')} {record.get('error', record.get('message'))}"
        for path in paths
        for record in log_records(path)
        if record.get("action") in ERROR_ACTIONS
    ]


def test_producers_and_workers_through_pgbouncer(
    bouncer: PgBouncer, workers: Workers, db: psycopg.Connection[Any], db_url: str
) -> None:
    """4 producer threads (single enqueues, a JSON batch, a COPY batch) and 3 workers, all
    through PgBouncer in transaction mode with prepared statements off (each of the ways to
    say so): every job runs exactly once, no call fails."""
    name = dbname(db_url)
    through = bouncer.url(name)
    workers.start("-c", "8", "--poll-interval", "0.5", "--listen-url", db_url, name="cli-flag", url=through,
                  launcher=("-m", "jobqueue", "--no-prepared-statements"))  # fmt: skip
    workers.start("-c", "8", "--poll-interval", "0.5", "--listen-url", db_url, name="url-param",
                  url=bouncer.url(name, prepared_statements="off"))  # fmt: skip
    workers.start("-c", "8", "--poll-interval", "0.5", name="env-var", url=through,
                  env={"JOBQUEUE_PREPARED_STATEMENTS": "off"})  # fmt: skip

    ids: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def produce(jq: JobQueue, base: int) -> None:
        try:
            with jq:
                mine = [jq.enqueue("chaos.work", {"n": base + i}) for i in range(150)]
                mine += jq.enqueue_many([{"type": "chaos.work", "payload": {"n": base + 1000 + i}} for i in range(20)])
                if base == 0:  # COPY into a temporary table, then enqueue_batch: one transaction
                    mine += jq.enqueue_many([{"type": "chaos.work", "payload": {"n": 50_000 + i}} for i in range(1000)])
            with lock:
                ids.extend(mine)
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    handles = [
        JobQueue(bouncer.url(name, prepared_statements="off"), pool_size=2),
        JobQueue(bouncer.url(name, prepared_statements="off"), pool_size=2),
        JobQueue(through, pool_size=2, prepared_statements=False),
        JobQueue(through, pool_size=2, prepared_statements=False),
    ]
    threads = [threading.Thread(target=produce, args=(jq, n * 10_000)) for n, jq in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"{len(errors)} producer calls failed through PgBouncer, e.g. {errors[:3]}"
    assert len(ids) == 4 * 170 + 1000
    record_enqueued(db_url, ids)

    wait_for(
        lambda: scalar(db, "SELECT count(*) FROM jobqueue.job_history WHERE id = ANY(%s)", (ids,)) == len(ids),
        180,
        "every job to complete through PgBouncer",
        interval=0.25,
    )
    for proc in workers.procs:
        proc.send_signal(signal.SIGTERM)
    codes = [proc.wait(60) for proc in workers.procs]
    runs = db.execute(
        "SELECT count(*) AS runs, count(DISTINCT job_id) AS jobs FROM exec_ledger WHERE job_id = ANY(%s)", (ids,)
    ).fetchone()
    assert runs == {"runs": len(ids), "jobs": len(ids)}, f"executions vs jobs: {runs}"
    figures = check_invariants(db_url, workers.log_paths())
    assert figures["duplicates"] == 0
    assert problems(workers.log_paths()) == []
    assert codes == [0, 0, 0], codes


def test_listen_through_pgbouncer_is_detected(
    bouncer: PgBouncer, workers: Workers, db: psycopg.Connection[Any], db_url: str
) -> None:
    """A worker whose LISTEN goes through PgBouncer in transaction mode does not hear its own
    test NOTIFY: it warns once, naming --listen-url, and keeps working by polling. One with a
    direct --listen-url hears it and does not warn."""
    name = dbname(db_url)
    pooled = workers.start("-c", "2", "--poll-interval", "0.5", name="pooled-listen",
                           url=bouncer.url(name, prepared_statements="off"))  # fmt: skip
    direct = workers.start("-c", "2", "--poll-interval", "0.5", "--listen-url", db_url, name="direct-listen",
                           url=bouncer.url(name, prepared_statements="off"))  # fmt: skip

    def actions(proc: Any, action: str) -> list[dict[str, Any]]:
        return [r for r in log_records(Path(proc.log_path)) if r.get("action") == action]

    warned = wait_for(lambda: actions(pooled, "listen_unverified"), 60, "the warning about LISTEN through PgBouncer")
    wait_for(lambda: actions(direct, "listen_verified"), 60, "the direct listener to hear its test NOTIFY")
    with JobQueue(bouncer.url(name, prepared_statements="off")) as jq:
        job = jq.enqueue("chaos.work", {"n": 1})
        wait_for(lambda: jq.get(job).state == "completed", 30, "a job, by polling")
    for proc in (pooled, direct):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert len(warned) == 1 and len(actions(pooled, "listen_unverified")) == 1, "warned more than once"
    assert "--listen-url" in warned[0]["message"]
    assert actions(direct, "listen_unverified") == []
    assert actions(pooled, "listen_verified") == []
