"""The tasks `jobqueue bench` runs on real workers: a no-op, and one that records its start.

The bench starts ``python -m jobqueue worker --app jobqueue.bench.app:jq`` against its
scratch database. ``bench.noop`` measures the queue's own cost per job. ``bench.latency``
reads ``time.time()`` first thing and then stores it in the UNLOGGED table
``bench.latency`` (created by the bench), so that the bench can subtract the time the
producer read right after its enqueue committed: same machine, same clock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from jobqueue.client import JobQueue
from jobqueue.tasks import JobContext

NOOP = "bench.noop"
LATENCY = "bench.latency"
#: Created by the bench in its scratch database: job_id bigint PRIMARY KEY, started float8.
LATENCY_TABLE = "bench.latency"
RECORD_LATENCY = f"INSERT INTO {LATENCY_TABLE} (job_id, started) VALUES (%s, %s) ON CONFLICT DO NOTHING"

jq = JobQueue(application_name="jobqueue-bench-worker")

_local = threading.local()


@jq.task(name=NOOP)
def noop(**payload: Any) -> None:
    """Do nothing: what is left is the queue's own cost."""


@jq.task(name=LATENCY)
def latency(ctx: JobContext, **payload: Any) -> None:
    """Record when this handler started (seconds since the epoch) for the bench."""
    started = time.time()
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        # One connection per handler thread, apart from the worker's pool so that the
        # recording never waits for (or delays) a claim or an acknowledgement.
        conn = psycopg.connect(jq.target.url, autocommit=True, application_name="jobqueue-bench-recorder")
        conn.execute("SET synchronous_commit = off")
        _local.conn = conn
    conn.execute(RECORD_LATENCY, (ctx.id, started))
