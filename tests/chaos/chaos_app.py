"""The app the worker subprocesses of the acceptance tests run (``--app tests.chaos.chaos_app:jq``).

Every execution is written to ``exec_ledger`` (job id, lease token, pid) on a separate
autocommit connection *before* the handler's work, so a test can count executions; the
accepted completions are read from the audit trail (``jobqueue.job_event``).
"""

from __future__ import annotations

import os
import threading
import time

import psycopg

from jobqueue import JobContext, JobQueue

jq = JobQueue(pool_size=int(os.environ.get("CHAOS_POOL_SIZE", "6")))
_local = threading.local()


def _ledger() -> psycopg.Connection[tuple[object, ...]]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["LEDGER_URL"], autocommit=True)
        _local.conn = conn
    return conn


def record(ctx: JobContext) -> None:
    for attempt in range(50):
        try:
            _ledger().execute(
                "INSERT INTO exec_ledger (job_id, token, pid) VALUES (%s, %s, %s)", (ctx.id, ctx.token, os.getpid())
            )
            return
        except psycopg.OperationalError:
            _local.conn = None
            time.sleep(min(0.1 * (attempt + 1), 1.0))
    raise RuntimeError("ledger unreachable")


@jq.task(name="chaos.work", max_attempts=50)
def work(ctx: JobContext, n: int, sleep_ms: int = 0) -> int:
    record(ctx)
    time.sleep(sleep_ms / 1000)
    return n


@jq.task(name="chaos.hold", max_attempts=50)
def hold(ctx: JobContext, seconds: float) -> str:
    """Runs until `seconds` pass or the job is cancelled (the worker sets it at shutdown)."""
    record(ctx)
    if ctx.wait_cancelled(seconds):
        return "interrupted"
    return "held"


@jq.task(name="chaos.sleep", max_attempts=50)
def sleep(ctx: JobContext, seconds: float) -> str:
    """Sleeps and ignores cancellation (a handler that cannot be interrupted)."""
    record(ctx)
    time.sleep(seconds)
    return "slept"
