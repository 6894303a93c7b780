"""The overload run's harness on a minimal queue: how flat can a Postgres queue be on this machine? (issue 13)

`jobqueue bench --only overload` judges jobqueue by its lowest 30 s of completions over its
peak (at least 0.90 asked), on 2 cores shared by the worker, the paced producer and the
server. On the machines of this project that figure has been 0.42-0.89, and the machine's
own compute swung by 8-40 % between 30 s spans meanwhile (`jobqueue bench --only machine`).
This script asks the question the other way round: the same harness, the same machine, the
same verdict, on the least a queue can do, with nothing of jobqueue on the path.

The minimal queue, in its own database: one table with jobqueue.job's storage settings, a
partial claim index on (priority DESC, run_at, id) of the waiting rows; a claim is an UPDATE
of up to 32 rows picked with ``FOR UPDATE SKIP LOCKED`` that takes a lease number; an
acknowledgement is a DELETE fenced by that number. No audit rows, no history, no counters,
no triggers, no retries.

The harness, as in jobqueue/bench/overload.py: a worker process (the acknowledgement of its
last batch and the next claim of 32 in one pipeline, one implicit transaction, as
jobqueue/worker.py sends its round), a producer thread here pacing INSERTs of at most 128
jobs 100 times a second, and a sampler here that every 5 s reads the jobs inserted and
claimed (two sequences), the cores each part used and the machine's speed probe
(jobqueue/bench/cpu.py). Phases: the capacity (an empty-queue drain of ``--capacity-jobs``),
the overload (``--factor`` x capacity offered for ``--duration`` s), the recovery (half the
capacity offered, until the backlog is gone or ``max(duration / 2, 60)`` s). The verdict is
jobqueue.bench.overload_verdict.summarize, the one ``jobqueue bench`` prints.

Usage: ``.venv/bin/python bench/overload_raw.py [--duration 600] [--json F]`` on the
resolved database ($DATABASE_URL, else the embedded server); it creates its database and
drops it at the end (needs CREATE DATABASE). With ``--json F`` the windows and the summary go
to F and the plot beside it (F with .png).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobqueue.bench.core import noop_jobs
from jobqueue.bench.cpu import SAMPLER_APP, CpuSampler
from jobqueue.bench.overload import PacedProducer
from jobqueue.bench.overload_plot import plot
from jobqueue.bench.overload_verdict import Window, summarize
from jobqueue.bench.scratch import database_url
from jobqueue.round import run_round

BATCH = 32
WINDOW_S = 5.0
RECOVERY_FACTOR = 0.5
#: The worker's nap when a claim found nothing (jobqueue's worker would wait for a NOTIFY).
IDLE_S = 0.01

#: jobqueue.job's storage settings (sql/schema.sql), so that vacuum visits both alike.
SCHEMA = """
CREATE SEQUENCE raw_lease_seq;
CREATE TABLE raw_job (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    priority smallint NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    state smallint NOT NULL DEFAULT 0,
    lease bigint,
    claimed_at timestamptz,
    payload jsonb NOT NULL
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000,
    autovacuum_vacuum_cost_delay = 1,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 20000,
    vacuum_index_cleanup = on
);
CREATE INDEX raw_job_claim ON raw_job (priority DESC, run_at, id) WHERE state = 0;
"""
CLAIM = b"""
UPDATE raw_job j SET state = 1, lease = nextval('raw_lease_seq'), claimed_at = now()
FROM (SELECT id FROM raw_job WHERE state = 0 AND run_at <= now()
      ORDER BY priority DESC, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) c
WHERE j.id = c.id
RETURNING j.id, j.lease, j.payload
"""
ACK = b"""
DELETE FROM raw_job j USING unnest($1::bigint[], $2::bigint[]) AS a(id, lease)
WHERE j.id = a.id AND j.lease = a.lease
RETURNING j.id
"""
ENQUEUE = "INSERT INTO raw_job (payload) SELECT unnest(%s::jsonb[])"
COUNTS = """
SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM raw_job_id_seq),
       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM raw_lease_seq)
"""
VACUUMS = "SELECT autovacuum_count, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'raw_job'"
EMPTY = "SELECT NOT EXISTS (SELECT 1 FROM raw_job)"


def payloads(start: int, count: int) -> list[str]:
    """The jobs jobqueue's bench enqueues (jobqueue.bench.core.noop_jobs), as JSON text."""
    return [json.dumps(job) for job in noop_jobs(start, count)]


def worker_main(url: str, go: Event, stop: Event) -> None:
    """The worker process: acknowledge the last batch and claim the next in one pipeline."""
    with psycopg.connect(url, autocommit=True, application_name="jobqueue-bench-worker-raw") as conn:
        go.wait()
        batch: list[tuple[Any, ...]] = []
        while not stop.is_set():
            statements: list[tuple[bytes, tuple[str, ...], dict[str, Any]]] = []
            if batch:
                ack = {"ids": [r[0] for r in batch], "leases": [r[1] for r in batch]}
                statements.append((ACK, ("ids", "leases"), ack))
            statements.append((CLAIM, ("batch",), {"batch": BATCH}))
            batch = run_round(conn, statements)[-1]
            if not batch:
                time.sleep(IDLE_S)


class Producer(PacedProducer):
    """Offers ``rate`` jobs per second with jobqueue's overload pacing, as INSERTs of the same jobs."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.conn = psycopg.connect(url, autocommit=True, application_name="jobqueue-bench-producer")

    def send(self, start: int, size: int) -> None:
        self.conn.execute(ENQUEUE, (payloads(start, size),))

    def close(self) -> None:
        self.conn.close()


class Run:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url, self.args = url, args
        self.t0 = time.monotonic()
        self.phase, self.offered = "idle", 0.0
        self.windows: list[Window] = []
        self.worker: multiprocessing.process.BaseProcess | None = None
        self.cpu = CpuSampler(lambda: [self.worker.pid] if self.worker and self.worker.pid else [])
        self.errors: list[BaseException] = []

    def sampler(self, stop: threading.Event) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True, application_name=SAMPLER_APP) as conn:
                prev = self.read(conn)
                while not stop.wait(max(WINDOW_S - (time.monotonic() - prev["mono"]), 0.0)):
                    cur = self.read(conn)
                    self.window(prev, cur)
                    prev = cur
        except BaseException as exc:
            self.errors.append(exc)

    def read(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        row = conn.execute(COUNTS).fetchone()
        vac = conn.execute(VACUUMS).fetchone()
        assert row is not None
        return {
            "mono": time.monotonic(),
            "enqueued": int(row[0]),
            "claimed": int(row[1]),
            "table": {"autovacuum_count": int(vac[0]), "n_dead_tup": int(vac[1])} if vac else {},
            "cpu": self.cpu.read(conn),
        }

    def window(self, prev: dict[str, Any], cur: dict[str, Any]) -> None:
        seconds = max(cur["mono"] - prev["mono"], 1e-6)
        enq, claims = cur["enqueued"] - prev["enqueued"], cur["claimed"] - prev["claimed"]
        self.windows.append(
            Window(
                t=round(cur["mono"] - self.t0, 2),
                phase=self.phase,
                offered=self.offered,
                enqueued=enq,
                claimed=claims,
                enqueue_rate=round(enq / seconds, 1),
                completion_rate=round(claims / seconds, 1),
                backlog=max(cur["enqueued"] - cur["claimed"], 0),
                claim_calls=0,
                claim_ms=None,
                claim_source="none",
                claim_buffers=None,
                claim_max_ms=None,
                explain=None,
                table=cur["table"],
                indexes={},
                claim_index=None,
                loadavg_1m=round(os.getloadavg()[0], 2),
                cpu=CpuSampler.window(prev.get("cpu"), cur.get("cpu"), seconds),
            )
        )
        w = self.windows[-1]
        print(f"{w.t:7.1f}s {w.phase:9} completions {w.completion_rate:8,.0f}/s  backlog {w.backlog:10,}", flush=True)

    def wait(self, seconds: float, producer: Producer | None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if producer is not None and producer.error is not None:
                raise RuntimeError(f"producer: {producer.error}")
            if self.errors:
                raise RuntimeError(f"sampler: {self.errors[0]}")
            if self.worker is not None and not self.worker.is_alive():
                raise RuntimeError(f"the worker exited ({self.worker.exitcode})")
            time.sleep(min(0.25, max(end - time.monotonic(), 0.0)))

    def execute(self) -> dict[str, Any]:
        args = self.args
        ctx = multiprocessing.get_context("spawn")
        go, stop_worker = ctx.Event(), ctx.Event()
        self.worker = ctx.Process(target=worker_main, args=(self.url, go, stop_worker), name="raw-worker")
        self.worker.start()
        stop = threading.Event()
        sampler = threading.Thread(target=self.sampler, args=(stop,), name="raw-sampler", daemon=True)
        producer = Producer(self.url)
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for start in range(0, args.capacity_jobs, 10_000):
                    conn.execute(ENQUEUE, (payloads(start, min(10_000, args.capacity_jobs - start)),))
                producer.sent = args.capacity_jobs
                self.phase = "capacity"
                sampler.start()
                started = time.monotonic()
                go.set()
                while not conn.execute(EMPTY).fetchone()[0]:  # type: ignore[index]
                    self.wait(0.05, None)
                capacity = args.capacity_jobs / (time.monotonic() - started)
            print(f"capacity: {capacity:,.0f} jobs/s (an empty-queue drain of {args.capacity_jobs:,})", flush=True)
            producer.start()
            self.phase, self.offered = "overload", round(args.factor * capacity, 1)
            producer.set_rate(self.offered)
            self.wait(args.duration, producer)
            half = RECOVERY_FACTOR * capacity
            self.phase, self.offered = "recovery", round(half, 1)
            producer.set_rate(half)
            end = time.monotonic() + max(args.duration * 0.5, 60.0)
            while time.monotonic() < end:
                self.wait(WINDOW_S, producer)
                last = self.windows[-1]
                if last.phase == "recovery" and last.backlog <= half * WINDOW_S:
                    break
            self.phase = "recovered"
            self.wait(2 * WINDOW_S, producer)
        finally:
            producer.stop()
            stop.set()
            sampler.join(30)
            stop_worker.set()
            go.set()
            self.worker.join(30)
            if self.worker.is_alive():
                self.worker.kill()
        capacity_rec = {"jobs": args.capacity_jobs, "rate": round(capacity, 1)}
        return summarize(self.windows, capacity_rec, WINDOW_S, 0, producer.sent - args.capacity_jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of overload (default 600)")
    parser.add_argument("--factor", type=float, default=1.3, help="offered rate over the capacity (default 1.3)")
    parser.add_argument("--capacity-jobs", type=int, default=50_000, help="jobs of the capacity drain")
    parser.add_argument("--json", type=Path, help="write the windows and the summary here (and the plot beside it)")
    args = parser.parse_args()
    if not 10 <= args.duration <= 86_400:
        parser.error("--duration: between 10 and 86400 seconds")
    if not 1.0 < args.factor <= 10:
        parser.error("--factor: more than 1 and at most 10")
    if not 1_000 <= args.capacity_jobs <= 10_000_000:
        parser.error("--capacity-jobs: between 1000 and 10000000")
    base = os.environ.get("DATABASE_URL")
    if not base:
        from jobqueue.embedded import EmbeddedServer

        base = EmbeddedServer().ensure_running()
    name = f"jqraw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as su:
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    started = datetime.now(UTC)
    try:
        url = database_url(base, name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        run = Run(url, args)
        summary = run.execute()
    finally:
        with psycopg.connect(base, autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    keys = (
        "capacity", "offered_overload", "peak_rate_smoothed", "overload_min_over_peak",
        "overload_min_over_overload_peak", "overload_mean_rate", "backlog_at_end_of_overload",
        "recovery_over_peak", "trend_pct_per_million", "trend_pct_per_million_ci95",
        "steal_pct_per_tenth_core", "overload_min_over_overload_peak_steal_removed",
        "machine_speed_min_over_max", "machine_steal_max_cores", "met_overload", "met_recovery",
    )  # fmt: skip
    print(json.dumps({k: summary.get(k) for k in keys}, indent=1))
    if args.json:
        document = {
            "title": f"minimal queue (bench/overload_raw.py), offered {summary.get('offered_overload')}/s "
            f"then {summary.get('offered_recovery')}/s ({started:%Y-%m-%d %H:%M} UTC)",
            "started_at": started.isoformat(),
            "config": {"duration_s": args.duration, "factor": args.factor, "window_s": WINDOW_S, "backlog_jobs": 0},
            "summary": summary,
            "windows": [w.__dict__ for w in run.windows],
        }
        args.json.write_text(json.dumps(document, indent=1, default=str) + "\n")
        plot(document, args.json.with_suffix(".png"))


if __name__ == "__main__":
    main()
