"""The app the worker subprocesses of the chaos suite run (``--app tests.chaos.chaos_app:jq``).

Every execution is written to ``exec_ledger`` (job id, lease token, pid) on a separate
autocommit connection *before* the handler's work, so a test can count executions. The
accepted completions are read from the workers' acknowledgements (tests/chaos/harness.py).
"""

from __future__ import annotations

import os
import threading
import time

import psycopg

from jobqueue import JobContext, JobQueue

jq = JobQueue(pool_size=int(os.environ.get("CHAOS_POOL_SIZE", "6")))
_local = threading.local()
#: How long a handler keeps trying to reach the ledger (a server restart, a full server).
LEDGER_PATIENCE_S = 180.0


def _ledger() -> psycopg.Connection[tuple[object, ...]]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["LEDGER_URL"], autocommit=True, connect_timeout=5)
        _local.conn = conn
    return conn


def _write(sql: str, params: tuple[object, ...]) -> None:
    deadline = time.monotonic() + LEDGER_PATIENCE_S
    attempt = 0
    while True:
        try:
            _ledger().execute(sql, params)
            return
        except psycopg.OperationalError:
            _local.conn = None
            attempt += 1
            if time.monotonic() > deadline:
                raise RuntimeError("ledger unreachable") from None
            time.sleep(min(0.1 * attempt, 1.0))


def record(ctx: JobContext) -> None:
    _write("INSERT INTO exec_ledger (job_id, token, pid) VALUES (%s, %s, %s)", (ctx.id, ctx.token, os.getpid()))


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


@jq.task(name="chaos.poison", max_attempts=3)
def poison(ctx: JobContext) -> None:
    """Kills its worker process outright, every time (CHAOS-07)."""
    record(ctx)
    os._exit(137)


@jq.task(name="chaos.steps", max_attempts=50)
def steps(ctx: JobContext, count: int, step_s: float) -> str:
    """A side effect in steps; before each one it checks that it still holds the lease (CHAOS-05).

    Each step is written to step_ledger (the "side effect") on the direct ledger connection,
    so a worker cut off from the queue's database can still be seen taking steps.
    """
    record(ctx)
    for step in range(count):
        if ctx.lease_lost:
            return f"stopped before step {step}: lease lost"
        _write(
            "INSERT INTO step_ledger (job_id, token, pid, step) VALUES (%s, %s, %s, %s)",
            (ctx.id, ctx.token, os.getpid(), step),
        )
        time.sleep(step_s)
    return "all steps"


@jq.task(name="chaos.flaky", max_attempts=5)
def flaky(ctx: JobContext, fail_times: int) -> int:
    """Raises on its first `fail_times` attempts, then succeeds (retry timing, CHAOS-06)."""
    record(ctx)
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"flaky attempt {ctx.attempt}")
    return ctx.attempt
