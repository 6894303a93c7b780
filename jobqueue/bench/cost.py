"""The cost scenario: transactions, xids, WAL bytes and statements per job.

Single and batched paths, jobqueue and the baseline; autovacuum is off in the scratch
database while it measures (its transactions would count as the client's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from jobqueue.bench.config import CLAIM_BATCH, COPY_CALLS, JSON_BATCH, PROGRESS_POLL_S, Budget, Measured
from jobqueue.bench.core import Bench, chunks, noop_jobs
from jobqueue.bench.registry import scenario
from jobqueue.bench.statements import AUTOVACUUM_OFF, COUNTERS, DRAINED, FUNCTION_CALLS, STATEMENT_CALLS, WAL_SINCE
from jobqueue.client import COPY_THRESHOLD


@scenario("cost")
def cost(bench: Bench, budget_s: float) -> None:
    from jobqueue.client import JobQueue

    single, batch = bench.config.cost_single_n, bench.config.cost_batch_n
    budget = Budget(budget_s, 6)
    concurrency = bench.config.best_concurrency

    def measure(key: str, label: str, system: str, jobs: int, per: int, run: Callable[[], Measured]) -> None:
        bench.scratch.wait_quiet()
        calls_before = _function_calls(bench)
        statements_before = _statements(bench)
        bench.scratch.wait_quiet()
        before = _counters(bench)
        m = run()
        bench.scratch.wait_quiet()
        m.extra.update(_cost_deltas(bench, before, calls_before, statements_before, m.jobs, per))
        m.extra["jobs_per_batch"] = per
        bench.record("cost", key, label, system, 1, jobs, m)

    def insert_one() -> Measured:
        shares = [{"start": 0, "count": single}]
        return bench.run_processes("insert", 1, single, budget.phase(), shares)

    def enqueue_one() -> Measured:
        shares = [{"start": 0, "count": single}]
        return bench.run_processes("enqueue", 1, single, budget.phase(), shares)

    def copy_batch() -> Measured:
        return bench.copy(batch, budget.phase())

    # Several calls on one handle, so that what a session pays once (connecting, dropping
    # the temporary table at exit) is spread as in a long-lived producer.
    copy_size = max(COPY_THRESHOLD, batch // COPY_CALLS)

    def enqueue_copy() -> Measured:
        started = time.monotonic()
        with JobQueue(bench.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
            for k in range(COPY_CALLS):
                jq.enqueue_many(noop_jobs(k * copy_size, copy_size))
        return Measured(copy_size * COPY_CALLS, time.monotonic() - started, False)

    def enqueue_json() -> Measured:
        started, done = time.monotonic(), 0
        with JobQueue(bench.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
            for start, size in chunks(batch, JSON_BATCH):
                jq.enqueue_many(noop_jobs(start, size))
                done += size
        return Measured(done, time.monotonic() - started, False)

    def claim_delete() -> Measured:
        return bench.run_processes("claim", 1, batch, budget.phase(), [{"form": "cte"}])

    bench.scratch.reset()
    _autovacuum_off(bench)
    bench.begin(f"cost: INSERT+NOTIFY x{single:,}", single)
    measure("cost.baseline.insert", "baseline INSERT + NOTIFY, 1 tx/job", "baseline", single, 1, insert_one)
    bench.begin(f"cost: enqueue() x{single:,}", single)
    measure("cost.enqueue.single", "enqueue(), 1 tx/job", "jobqueue", single, 1, enqueue_one)
    bench.truncate_baseline()
    bench.begin(f"cost: COPY {batch:,}", batch)
    measure("cost.baseline.copy", f"baseline COPY {batch:,}", "baseline", batch, batch, copy_batch)
    bench.begin(f"cost: enqueue_many {COPY_CALLS} x {copy_size:,} (COPY)", None)
    label = f"enqueue_many {COPY_CALLS} calls x {copy_size:,} (COPY path)"
    total = COPY_CALLS * copy_size
    measure("cost.enqueue.many", label, "jobqueue", total, copy_size, enqueue_copy)
    bench.begin(f"cost: enqueue_many x{JSON_BATCH} (JSON)", None)
    measure(
        "cost.enqueue.many_json",
        f"enqueue_many {JSON_BATCH}/call (JSON path)",
        "jobqueue",
        batch,
        JSON_BATCH,
        enqueue_json,
    )
    bench.truncate_baseline()
    bench.load_baseline(batch)
    bench.vacuum("bench.job")
    bench.begin(f"cost: claim {CLAIM_BATCH} + delete", batch)
    label = f"baseline claim {CLAIM_BATCH} + delete"
    measure("cost.baseline.claim_delete", label, "baseline", batch, CLAIM_BATCH, claim_delete)

    # The drain: loading the jobs is setup, so it runs before the counters are read.
    bench.scratch.reset()
    _autovacuum_off(bench)
    bench.load_jobs(batch)
    bench.vacuum("jobqueue.job")
    label = f"worker drain -c {concurrency} (claim + complete_many)"
    measure(
        "cost.drain",
        label,
        "jobqueue",
        batch,
        concurrency,
        lambda: _drain_loaded(bench, concurrency, batch, budget.phase()),
    )


def _autovacuum_off(bench: Bench) -> None:
    with bench.scratch.connect() as conn:
        conn.execute(AUTOVACUUM_OFF)


def _drain_loaded(bench: Bench, concurrency: int, n: int, deadline: float) -> Measured:
    bench.begin(f"cost: worker drain {n:,}", n)
    started = time.monotonic()
    workers = bench.spawn_workers(1, concurrency, burst=True)
    partial = False
    while workers.alive():
        if time.monotonic() > deadline and not partial:
            partial = True
            workers.terminate()
        time.sleep(PROGRESS_POLL_S)
    workers.stop(graceful=False)
    with bench.scratch.connect() as conn:
        row = conn.execute(DRAINED).fetchone()
    assert row is not None
    done = int(row[0])
    bench.advance(done, started)
    return Measured(done, float(row[1] or time.monotonic() - started), partial and done < n)


def _counters(bench: Bench) -> dict[str, Any]:
    with bench.scratch.admin() as conn:
        row = conn.execute(COUNTERS, (bench.scratch.name,)).fetchone()
    assert row is not None
    return {"xacts": int(row[0] or 0), "next_xid": int(row[1]), "lsn": str(row[2])}


def _function_calls(bench: Bench) -> dict[str, int]:
    if not bench.scratch.track_functions:
        return {}
    with bench.scratch.connect() as conn:
        return {str(name): int(calls) for name, calls in conn.execute(FUNCTION_CALLS).fetchall()}


def _statements(bench: Bench) -> int | None:
    if not bench.scratch.statements:
        return None
    with bench.scratch.connect() as conn:
        row = conn.execute(STATEMENT_CALLS, (bench.scratch.oid,)).fetchone()
    return int(row[0]) if row else None


def _cost_deltas(
    bench: Bench,
    before: dict[str, Any],
    calls_before: dict[str, int],
    statements_before: int | None,
    jobs: int,
    per: int,
) -> dict[str, Any]:
    with bench.scratch.admin() as conn:
        row = conn.execute(COUNTERS, (bench.scratch.name,)).fetchone()
        wal = conn.execute(WAL_SINCE, (before["lsn"],)).fetchone()
    assert row is not None and wal is not None
    xacts = int(row[0] or 0) - before["xacts"]
    xids = int(row[1]) - before["next_xid"]
    jobs = max(jobs, 1)
    batches = max(jobs / per, 1)
    out: dict[str, Any] = {
        "xacts": xacts,
        "xacts_per_job": round(xacts / jobs, 3),
        "xacts_per_batch": round(xacts / batches, 2),
        "xids": xids,
        "xids_per_job": round(xids / jobs, 3),
        "wal_bytes": int(wal[0]),
        "wal_bytes_per_job": round(int(wal[0]) / jobs, 1),
    }
    calls_after = _function_calls(bench)
    if calls_after:
        deltas = {k: v - calls_before.get(k, 0) for k, v in calls_after.items() if v - calls_before.get(k, 0) > 0}
        api = sum(v for k, v in deltas.items() if not k.startswith("_"))
        out["function_calls"] = deltas
        out["api_calls_per_job"] = round(api / jobs, 3)
    statements = _statements(bench)
    if statements is not None and statements_before is not None:
        # The two reads of pg_stat_statements itself are in the count; take them out.
        out["statements_per_job"] = round((statements - statements_before - 2) / jobs, 3)
    return out
