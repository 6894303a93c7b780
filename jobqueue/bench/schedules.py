"""`jobqueue bench --only schedules`: periodic schedules, three figures.

* **fire lag**: a per-second schedule fired by one worker at default settings (its own
  reconcile every 5 s enqueues each tick ahead, with run_at = the tick); the delay from each
  tick to its handler's start, p50 and p99, over at least 100 ticks (10 with --quick).
* **exactly once**: per-second schedules (missed = all) under 8 concurrent reconcile loops
  and 2 workers, for a stretch of real time and then time-compressed (the lookahead widened
  by 30 s per round, every loop released together each round: 10 minutes of ticks); every
  tick from the first to the last must have exactly one job.
* **reconcile cost**: `reconcile()` with 10,000 schedules (1,000 with --quick) of which 100
  are due: time per call (and with none due, for comparison).

Registered with ``@scenario("schedules", on_demand=True)``; the rows are ordinary bench rows.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from jobqueue.bench.config import START_TIMEOUT_S, Measured
from jobqueue.bench.core import Bench
from jobqueue.bench.latency import percentiles, wait_listening
from jobqueue.bench.registry import scenario, table

SCENARIO = "schedules"
LAG_TICKS = 110
QUICK_LAG_TICKS = 10
RACE_REAL_S = 30.0
QUICK_RACE_REAL_S = 3.0
RACE_ROUNDS = 20  # x 30 s of lookahead = 10 minutes of ticks
QUICK_RACE_ROUNDS = 4
RACE_LOOPS = 8
RACE_WORKERS = 2
RACE_SCHEDULES = 4
COST_SCHEDULES = 10_000
QUICK_COST_SCHEDULES = 1_000
COST_DUE = 100
COST_CALLS = 30
QUICK_COST_CALLS = 5

LAG_TYPE = "bench.latency"  # records its start time in bench.latency (jobqueue.bench.app)


@scenario(SCENARIO, on_demand=True)
def run_scenario(bench: Bench, budget_s: float) -> None:
    quick = bench.config.quick
    fire_lag(bench, QUICK_LAG_TICKS if quick else LAG_TICKS)
    exactly_once(bench, QUICK_RACE_REAL_S if quick else RACE_REAL_S, QUICK_RACE_ROUNDS if quick else RACE_ROUNDS)
    reconcile_cost(bench, QUICK_COST_SCHEDULES if quick else COST_SCHEDULES, QUICK_COST_CALLS if quick else COST_CALLS)


def _measured(jobs: int, seconds: float, partial: bool, extra: dict[str, Any]) -> Measured:
    return Measured(jobs, seconds, partial, extra=extra)


def fire_lag(bench: Bench, ticks: int) -> None:
    from jobqueue.worker import CONCURRENCY

    bench.scratch.reset()
    bench.begin(f"schedules: fire lag over {ticks} per-second ticks (1 worker)", ticks)
    workers = bench.spawn_workers(1, CONCURRENCY, burst=False)
    try:
        wait_listening(bench, workers)
        with bench.scratch.connect() as conn:
            conn.execute(
                "SELECT jobqueue.set_schedule(name => 'bench-lag', cron => '* * * * * *', job => %s)",
                (Jsonb({"type": LAG_TYPE}),),
            )
            # the worker's reconcile (every 5 s) fires it; the first ticks can come before that
            began = time.time() + 7.0
            deadline = time.monotonic() + ticks + 7.0 + START_TIMEOUT_S
            done = 0
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM bench.latency l JOIN jobqueue.jobs j ON j.id = l.job_id "
                    "WHERE extract(epoch FROM j.run_at) >= %s",
                    (began,),
                ).fetchone()
                done = int(row[0]) if row else 0
                bench.advance(done)
                if done >= ticks:
                    break
                time.sleep(0.5)
            rows = conn.execute(
                "SELECT (l.started - extract(epoch FROM j.run_at)::float8) * 1000 FROM bench.latency l "
                "JOIN jobqueue.jobs j ON j.id = l.job_id WHERE extract(epoch FROM j.run_at) >= %s "
                "ORDER BY j.run_at LIMIT %s",
                (began, ticks),
            ).fetchall()
            summary = conn.execute(
                "SELECT fired, lookahead FROM (SELECT count(*) AS fired FROM jobqueue.jobs "
                "WHERE metadata->>'schedule' = 'bench-lag') f, (SELECT value #>> '{}' AS lookahead "
                "FROM jobqueue.setting WHERE key = 'schedule_lookahead_s') s"
            ).fetchone()
    finally:
        workers.stop()
    lags = sorted(float(r[0]) for r in rows)
    extra = percentiles(lags)
    extra.update(
        ticks=len(lags),
        early=sum(1 for v in lags if v < 0),
        lookahead_s=summary[1] if summary else None,
        worker="1 worker, default settings (reconcile every 5 s)",
    )
    row = bench.record(
        SCENARIO,
        "schedules.fire_lag",
        "per-second schedule: tick -> handler start",
        "jobqueue",
        1,
        ticks,
        _measured(len(lags), float(len(lags)), len(lags) < ticks, extra),
    )
    row.target = "p99 < 50 ms"
    row.met = extra.get("p99_ms") is not None and extra["p99_ms"] < 50


def exactly_once(bench: Bench, real_s: float, rounds: int) -> None:
    from jobqueue.worker import CONCURRENCY

    bench.scratch.reset()
    names = [f"bench-race-{i}" for i in range(RACE_SCHEDULES)]
    with bench.scratch.connect() as conn:
        for name in names:
            conn.execute(
                "SELECT jobqueue.set_schedule(name => %s, cron => '* * * * * *', job => %s, missed => 'all', "
                "max_backfill => 10000)",
                (name, Jsonb({"type": "bench.noop"})),
            )
        # near real time first: every loop fires what is due within 2 s, so they collide
        conn.execute("UPDATE jobqueue.setting SET value = '2' WHERE key = 'schedule_lookahead_s'")
    bench.begin(f"schedules: exactly once, {RACE_LOOPS} reconcile loops + {RACE_WORKERS} workers", rounds)
    workers = bench.spawn_workers(RACE_WORKERS, CONCURRENCY, burst=False)
    errors: list[str] = []
    calls = [0]
    lookahead = [2]
    real_until = time.monotonic() + real_s
    round_no = [0]
    stop = threading.Event()
    lock = threading.Lock()

    def widen() -> None:
        round_no[0] += 1
        lookahead[0] = 60 + 30 * round_no[0]
        with bench.scratch.connect() as c:
            c.execute(
                "UPDATE jobqueue.setting SET value = %s WHERE key = 'schedule_lookahead_s'", (Jsonb(lookahead[0]),)
            )
        bench.advance(round_no[0])

    barrier = threading.Barrier(RACE_LOOPS, action=widen)

    def loop() -> None:
        try:
            with bench.scratch.connect() as c:
                while time.monotonic() < real_until and not stop.is_set():
                    c.execute("SELECT jobqueue.reconcile()")
                    with lock:
                        calls[0] += 1
                for _ in range(rounds):
                    barrier.wait(timeout=120)
                    c.execute("SELECT jobqueue.reconcile()")
                    with lock:
                        calls[0] += 1
        except (psycopg.Error, threading.BrokenBarrierError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            barrier.abort()

    started = time.monotonic()
    threads = [threading.Thread(target=loop, name=f"bench-reconcile-{i}") for i in range(RACE_LOOPS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        workers.stop()
    seconds = time.monotonic() - started
    with bench.scratch.connect() as conn:
        rows = conn.execute(
            "SELECT metadata->>'schedule', count(*), count(DISTINCT metadata->>'tick'), "
            "extract(epoch FROM max((metadata->>'tick')::timestamptz) - min((metadata->>'tick')::timestamptz)) "
            "FROM jobqueue.jobs WHERE metadata->>'schedule' LIKE 'bench-race-%' GROUP BY 1"
        ).fetchall()
        ran = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'completed'), count(*) FROM jobqueue.jobs "
            "WHERE metadata->>'schedule' LIKE 'bench-race-%'"
        ).fetchone()
    jobs = sum(int(r[1]) for r in rows)
    duplicates = sum(int(r[1]) - int(r[2]) for r in rows)
    missing = sum(int(float(r[3])) + 1 - int(r[2]) for r in rows)
    extra = {
        "schedules": len(rows),
        "ticks": jobs - duplicates,
        "fired_twice": duplicates,
        "missed": missing,
        "reconcile_calls": calls[0],
        "real_seconds": real_s,
        "compressed_rounds": rounds,
        "compressed_seconds_of_ticks": 30 * rounds + 60,
        "jobs_completed_by_workers": int(ran[0]) if ran else 0,
        "errors": errors[:3],
    }
    row = bench.record(
        SCENARIO,
        "schedules.exactly_once",
        f"{RACE_LOOPS} reconcile loops + {RACE_WORKERS} workers: ticks fired",
        "jobqueue",
        RACE_LOOPS,
        jobs,
        _measured(jobs, seconds, bool(errors), extra),
    )
    row.target = "0 fired twice, 0 missed"
    row.met = duplicates == 0 and missing == 0 and not errors and len(rows) == RACE_SCHEDULES


def reconcile_cost(bench: Bench, schedules: int, calls: int) -> None:
    bench.scratch.reset()
    bench.begin(f"schedules: reconcile with {schedules:,} schedules, {COST_DUE} due", calls * 2)
    with bench.scratch.connect() as conn:
        # as the owner, in bulk: the schedules that are not due fire once a year
        conn.execute(
            "INSERT INTO jobqueue.schedule (name, cron, tz, job, next_at) "
            "SELECT 'idle-' || i, '0 0 1 1 *', 'UTC', '{\"type\": \"bench.noop\"}', "
            "jobqueue._cron_next(jobqueue._cron_parse('0 0 1 1 *'), now(), 'UTC') "
            "FROM generate_series(1, %s) AS i",
            (schedules - COST_DUE,),
        )
        conn.execute(
            "INSERT INTO jobqueue.schedule (name, cron, tz, job, next_at) "
            "SELECT 'due-' || i, '* * * * *', 'Europe/Berlin', '{\"type\": \"bench.noop\"}', now() "
            "FROM generate_series(1, %s) AS i",
            (COST_DUE,),
        )
        conn.execute("VACUUM ANALYZE jobqueue.schedule")
        conn.execute("SELECT jobqueue.reconcile()")  # warm: partitions, caches
        due_ms: list[float] = []
        idle_ms: list[float] = []
        fired: list[int] = []
        for i in range(calls):
            # make the 100 due again (their next tick now), then time one reconcile
            conn.execute("UPDATE jobqueue.schedule SET next_at = date_trunc('second', now()) WHERE name LIKE 'due-%'")
            conn.execute("DELETE FROM jobqueue.schedule_tick")
            t0 = time.perf_counter()
            summary = conn.execute("SELECT jobqueue.reconcile()").fetchone()
            due_ms.append((time.perf_counter() - t0) * 1000)
            fired.append(int(summary[0]["schedule_jobs_enqueued"]) if summary else 0)
            conn.execute("DELETE FROM jobqueue.job")
            bench.advance(2 * i + 1)
            t0 = time.perf_counter()
            conn.execute("SELECT jobqueue.reconcile()")
            idle_ms.append((time.perf_counter() - t0) * 1000)
            bench.advance(2 * i + 2)
    for key, label, values, extra in (
        (
            "schedules.reconcile_due",
            f"reconcile(), {schedules:,} schedules, {COST_DUE} due",
            due_ms,
            {"jobs_enqueued_per_call": statistics.median(fired)},
        ),
        ("schedules.reconcile_idle", f"reconcile(), {schedules:,} schedules, none due", idle_ms, {}),
    ):
        ordered = sorted(values)
        extra.update(
            schedules=schedules,
            due=COST_DUE if key.endswith("due") else 0,
            calls=len(values),
            p50_ms=round(statistics.median(ordered), 2),
            max_ms=round(ordered[-1], 2),
            mean_ms=round(statistics.fmean(ordered), 2),
        )
        bench.record(
            SCENARIO, key, label, "jobqueue", 1, len(values), _measured(len(values), sum(values) / 1000, False, extra)
        )


@table
def print_table(bench: Bench, console: Any) -> None:
    from rich.table import Table

    rows = [r for r in bench.rows if r.scenario == SCENARIO]
    if not rows:
        return
    table = Table(title="Periodic schedules", title_justify="left")
    for heading in ("figure", "result", "detail", "target"):
        table.add_column(heading)
    for r in rows:
        e = r.extra
        if r.key == "schedules.fire_lag":
            result = f"p50 {e.get('p50_ms')} ms, p99 {e.get('p99_ms')} ms"
            detail = f"{e.get('ticks')} ticks, max {e.get('max_ms')} ms, lookahead {e.get('lookahead_s')} s"
        elif r.key == "schedules.exactly_once":
            result = f"{e.get('fired_twice')} fired twice, {e.get('missed')} missed"
            detail = (
                f"{e.get('ticks'):,} ticks of {e.get('schedules')} schedules, {e.get('reconcile_calls'):,} "
                f"reconcile calls, {e.get('jobs_completed_by_workers'):,} run by the workers"
            )
        else:
            result = f"p50 {e.get('p50_ms')} ms per call"
            detail = f"{e.get('calls')} calls, max {e.get('max_ms')} ms" + (
                f", {e.get('jobs_enqueued_per_call')} jobs enqueued per call" if "jobs_enqueued_per_call" in e else ""
            )
        mark = "" if r.target is None else f"{r.target} {'[green]met[/]' if r.met else '[red]missed[/]'}"
        table.add_row(r.label, result, detail, mark)
    console.print(table)
