"""Throughput scenarios: the baseline, enqueue (both paths) and drain by real workers.

baseline  the least work a queue can do, in plain psycopg on a plain table
enqueue   JobQueue.enqueue_many (its COPY path); JobQueue.enqueue, one transaction per job
drain     N no-op jobs drained by real `jobqueue worker --burst` processes
"""

from __future__ import annotations

import time

from jobqueue.bench.config import (
    BULK_CHUNK,
    DRAIN_PROCESSES,
    PRODUCER_PROCESSES,
    Budget,
    Measured,
)
from jobqueue.bench.core import Bench, chunks, noop_jobs
from jobqueue.bench.processes import split
from jobqueue.bench.registry import scenario
from jobqueue.client import COPY_THRESHOLD


@scenario("baseline")
def baseline(bench: Bench, budget_s: float) -> None:
    n, single = bench.config.n, bench.config.single_n
    budget = Budget(budget_s, 2 + len(PRODUCER_PROCESSES) + len(DRAIN_PROCESSES))
    bench.scratch.reset()

    bench.begin(f"baseline: COPY {n:,} rows", n)
    m = bench.copy(n, budget.phase())
    bench.record("baseline", "baseline.copy", f"COPY {n:,} rows ({BULK_CHUNK:,} per COPY)", "baseline", 1, n, m)

    for procs in PRODUCER_PROCESSES:
        bench.truncate_baseline()
        bench.begin(f"baseline: INSERT+NOTIFY per tx x{procs}", single)
        shares = [{"start": s, "count": c} for s, c in split(single, procs)]
        m = bench.run_processes("insert", procs, single, budget.phase(), shares)
        bench.record("baseline", f"baseline.insert.p{procs}", "INSERT + NOTIFY, 1 tx/job", "baseline", procs, single, m)

    for procs in DRAIN_PROCESSES:
        bench.claim_delete("cte", procs, n, budget.phase(), f"baseline.claim_delete.p{procs}")
    # The other single-evaluation claim form, for the schema's choice (DESIGN.md section 2).
    bench.claim_delete("any", 1, n, budget.phase(), "baseline.claim_delete_any.p1")


@scenario("enqueue")
def enqueue(bench: Bench, budget_s: float) -> None:
    from jobqueue.client import JobQueue

    n, single = bench.config.n, bench.config.single_n
    budget = Budget(budget_s, 2 + 2 * len(PRODUCER_PROCESSES))
    bench.scratch.reset()
    # Each jobqueue row is compared with the baseline measured just before it: on a
    # shared machine, rows measured minutes apart differ by more than the effect.
    bench.begin(f"enqueue: baseline COPY {n:,}", n)
    m = bench.copy(n, budget.phase())
    bench.record("enqueue", "enqueue.baseline.copy", "baseline COPY, just before", "baseline", 1, n, m)
    bench.begin(f"enqueue: enqueue_many {n:,}", n)
    deadline = budget.phase()
    with JobQueue(bench.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
        jq.check_schema()
        started, done = time.monotonic(), 0
        for start, size in chunks(n, BULK_CHUNK):
            if time.monotonic() > deadline:
                break
            jq.enqueue_many(noop_jobs(start, size))
            done += size
            bench.advance(done, started)
        m = Measured(done, time.monotonic() - started, done < n)
    row = bench.record(
        "enqueue",
        "enqueue.many",
        f"enqueue_many {n:,} ({_path(min(n, BULK_CHUNK))}, {BULK_CHUNK:,}/call)",
        "jobqueue",
        1,
        n,
        m,
    )
    bench.compare(row, "enqueue.baseline.copy")

    for procs in PRODUCER_PROCESSES:
        bench.scratch.reset()
        bench.begin(f"enqueue: baseline INSERT+NOTIFY per tx x{procs}", single)
        shares = [{"start": s, "count": c} for s, c in split(single, procs)]
        m = bench.run_processes("insert", procs, single, budget.phase(), shares)
        label = "baseline INSERT + NOTIFY, just before"
        bench.record("enqueue", f"enqueue.baseline.insert.p{procs}", label, "baseline", procs, single, m)
        bench.begin(f"enqueue: enqueue() per tx x{procs}", single)
        m = bench.run_processes("enqueue", procs, single, budget.phase(), shares)
        row = bench.record("enqueue", f"enqueue.single.p{procs}", "enqueue(), 1 tx/job", "jobqueue", procs, single, m)
        bench.compare(row, f"enqueue.baseline.insert.p{procs}")


@scenario("drain")
def drain(bench: Bench, budget_s: float) -> None:
    n = bench.config.n
    cases = [(p, c) for c in bench.config.drain_concurrency for p in DRAIN_PROCESSES]
    budget = Budget(budget_s, len(cases) + len(DRAIN_PROCESSES))
    for procs, concurrency in cases:
        baseline = f"drain.baseline.p{procs}"
        if bench.row(baseline) is None:  # the baseline just before the first drain of each count
            bench.scratch.reset()
            bench.claim_delete("cte", procs, n, budget.phase(), baseline, scenario="drain")
        m = bench.drain_burst(
            procs, concurrency, n, budget.phase(), f"drain: {n:,} jobs, {procs} worker(s) -c {concurrency}"
        )
        key = f"drain.p{procs}" if concurrency == bench.config.best_concurrency else f"drain.p{procs}.c{concurrency}"
        row = bench.record("drain", key, f"worker --burst -c {concurrency}", "jobqueue", procs, n, m)
        bench.compare(row, baseline)


def _path(size: int) -> str:
    return "COPY path" if size >= COPY_THRESHOLD else "JSON path"
