"""The latency scenario: an idle worker; jobs enqueued one by one at fixed rates.

Measures enqueue commit -> handler start with one clock: the producer reads ``time.time()``
right after its commit returns; the handler (:mod:`jobqueue.bench.app`) records its own.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from jobqueue.bench.config import (
    LATENCY_GRACE_S,
    LATENCY_PRODUCERS,
    LATENCY_RATES,
    LATENCY_TARGETS_MS,
    PROGRESS_POLL_S,
    START_TIMEOUT_S,
    BenchError,
    Budget,
    Measured,
    Row,
)
from jobqueue.bench.core import Bench
from jobqueue.bench.processes import Workers
from jobqueue.bench.registry import scenario
from jobqueue.bench.statements import LATENCY_TYPE, LISTENING_WORKERS, QUEUE
from jobqueue.config import CONCURRENCY


@scenario("latency")
def latency(bench: Bench, budget_s: float) -> None:
    from jobqueue.client import JobQueue

    seconds = bench.config.latency_seconds
    budget = Budget(budget_s, len(LATENCY_RATES))
    bench.scratch.reset()
    bench.begin("latency: starting an idle worker", None)
    workers = bench.spawn_workers(1, CONCURRENCY, burst=False)
    try:
        with JobQueue(bench.scratch.url, pool_size=LATENCY_PRODUCERS, application_name="jobqueue-bench") as jq:
            wait_listening(bench, workers)
            with contextlib.ExitStack() as stack:  # open every producer connection before the clock
                for _ in range(LATENCY_PRODUCERS):
                    stack.enter_context(jq.pool.connection())
            warm = [jq.enqueue(LATENCY_TYPE, {"i": -i}, queue=QUEUE) for i in range(1, 4)]
            _wait_recorded(bench, warm, time.monotonic() + START_TIMEOUT_S)
            time.sleep(0.5)
            for rate in LATENCY_RATES:
                count = max(int(rate * seconds), 1)
                bench.begin(f"latency: {rate}/s for {seconds:g} s", count)
                deadline = budget.phase()
                sent, elapsed = _paced(bench, jq, rate, count, deadline)
                started = _wait_recorded(bench, [i for i, _ in sent], time.monotonic() + LATENCY_GRACE_S)
                latencies = sorted((started[i] - t) * 1000 for i, t in sent if i in started)
                m = Measured(len(sent), elapsed, len(sent) < count, extra=percentiles(latencies))
                m.extra.update(rate_asked=rate, missing=len(sent) - len(latencies), worker_concurrency=CONCURRENCY)
                row = bench.record(
                    "latency", f"latency.{rate}", f"enqueue at {rate}/s -> handler start", "jobqueue", 1, count, m
                )
                _latency_target(row)
                time.sleep(0.5)
    finally:
        workers.stop()


def wait_listening(bench: Bench, workers: Workers) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with bench.scratch.admin() as conn:
        while time.monotonic() < deadline:
            if workers.exited():
                workers.stop(graceful=False)
            row = conn.execute(LISTENING_WORKERS, (bench.scratch.name,)).fetchone()
            if row and row[0] >= len(workers.procs):
                return
            time.sleep(0.05)
    raise BenchError("the latency worker did not start listening within 60 s")


def _paced(bench: Bench, jq: Any, rate: float, count: int, deadline: float) -> tuple[list[tuple[int, float]], float]:
    """Enqueue ``count`` jobs at ``rate`` per second, one transaction each; (id, commit time)."""
    sent: list[tuple[int, float]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    t0 = time.monotonic() + 0.05

    def produce(k: int) -> None:
        try:
            for i in range(k, count, LATENCY_PRODUCERS):
                due = t0 + i / rate
                if due > deadline:
                    return
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                job_id = jq.enqueue(LATENCY_TYPE, {"i": i}, queue=QUEUE)
                committed = time.time()  # right after the commit returned
                with lock:
                    sent.append((job_id, committed))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(LATENCY_PRODUCERS)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        bench.advance(len(sent))
        threads[0].join(PROGRESS_POLL_S)
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"latency producer: {errors[0]}")
    elapsed = max(time.monotonic() - t0, 1e-6)
    return sent, elapsed


def _wait_recorded(bench: Bench, ids: Sequence[int], deadline: float) -> dict[int, float]:
    found: dict[int, float] = {}
    with bench.scratch.connect() as conn:
        while True:
            rows = conn.execute("SELECT job_id, started FROM bench.latency WHERE job_id = ANY(%s)", (list(ids),))
            found = {int(r[0]): float(r[1]) for r in rows.fetchall()}
            if len(found) >= len(ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}

    def pct(p: float) -> float:
        index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
        return round(values[index], 2)

    return {
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(values[-1], 2),
        "mean_ms": round(statistics.fmean(values), 2),
        "samples": len(values),
    }


def _latency_target(row: Row) -> None:
    rate = int(row.extra.get("rate_asked") or 0)
    limits = LATENCY_TARGETS_MS.get(rate)
    if limits is None:
        return
    p50, p99 = row.extra.get("p50_ms"), row.extra.get("p99_ms")
    row.target = f"p50 <= {limits[0]:g} ms, p99 <= {limits[1]:g} ms"
    row.met = p50 is not None and p99 is not None and p50 <= limits[0] and p99 <= limits[1]
