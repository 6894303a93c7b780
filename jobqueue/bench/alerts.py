"""`jobqueue bench --only alerts`: what alert detection adds to every reconcile.

50 rules over 10 queues (the 10 built-in defaults plus 4 overrides per queue: depth, oldest
runnable age, error rate, stuck jobs), a backlog of 10,000 jobs per queue (1,000 with
--quick), a day of history (200,000 completed jobs, 20,000 failed attempts; a tenth with
--quick) and, before each timed call, a reconcile interval's new traffic (1,000 completions,
100 failures). Figures: the detection step alone (``jobqueue.check_alerts()``: tally the new
outcomes, observe every rule, update incidents), a whole ``reconcile()``, and a reconcile
whose detection step is skipped (another session holds its lock) on the same data; the
first detection (which tallies the whole day once) separately.

Registered with ``@scenario("alerts", on_demand=True)``; the rows are ordinary bench rows.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from jobqueue.bench.config import Measured
from jobqueue.bench.core import Bench
from jobqueue.bench.registry import scenario

SCENARIO = "alerts"
QUEUES = 10
BACKLOG = 10_000
HISTORY = 200_000
FAILURES = 20_000
CALLS = 30
QUICK_DIVISOR = 10
TRAFFIC_COMPLETED = 1_000
TRAFFIC_FAILED = 100


@scenario(SCENARIO, on_demand=True)
def run_scenario(bench: Bench, budget_s: float) -> None:
    quick = bench.config.quick
    div = QUICK_DIVISOR if quick else 1
    detection_cost(bench, BACKLOG // div, HISTORY // div, FAILURES // div, CALLS // (3 if quick else 1))


def detection_cost(bench: Bench, backlog: int, history: int, failures: int, calls: int) -> None:
    bench.scratch.reset()
    bench.begin(f"alerts: detection with 50 rules over {QUEUES} queues", calls)
    with bench.scratch.connect() as conn:
        conn.execute("UPDATE jobqueue.setting SET value = '0' WHERE key = 'alert_tally_lag_s'")
        for q in range(QUEUES):
            queue = f"bench-{q}"
            for name, settings in (
                ("queue_depth", '{"threshold": 50000}'),
                ("oldest_runnable_age", '{"threshold": 86400}'),
                ("error_rate_1h", '{"threshold": 0.9}'),
                ("job_stuck", '{"threshold": 7200}'),
            ):
                conn.execute("SELECT jobqueue.set_alert_rule(%s, %s, %s)", (name, settings, queue))
        rules = conn.execute("SELECT count(*) FROM jobqueue.alert_rule").fetchone()
        # as the owner, in bulk: a backlog per queue, a day of history and of failed attempts
        conn.execute(
            "INSERT INTO jobqueue.job (queue, type, payload, max_attempts) "
            "SELECT 'bench-' || (i %% %s), 'bench.t' || (i %% 5), '{}', 25 FROM generate_series(1, %s) AS i",
            (QUEUES, backlog * QUEUES),
        )
        conn.execute(
            "INSERT INTO jobqueue.job_history (id, queue, type, payload, state, max_attempts, attempt, finished_at) "
            "SELECT nextval('jobqueue.job_id_seq'), 'bench-' || (i %% %s), 'bench.t' || (i %% 5), '{}', 'completed', "
            "25, 1, now() - ((%s - i)::float8 / %s) * interval '1 day' FROM generate_series(1, %s) AS i",
            (QUEUES, history, history, history),
        )
        conn.execute(
            "INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state, at, detail) "
            "SELECT -i, 'bench-' || (i %% %s), 'processing', 'retrying', "
            "now() - ((%s - i)::float8 / %s) * interval '1 day', '{}' FROM generate_series(1, %s) AS i",
            (QUEUES, failures, failures, failures),
        )
        conn.execute("VACUUM ANALYZE jobqueue.job, jobqueue.job_history, jobqueue.job_event")
        t0 = time.perf_counter()
        conn.execute("SELECT jobqueue.check_alerts()")
        first_ms = (time.perf_counter() - t0) * 1000
        detect_ms: list[float] = []
        reconcile_ms: list[float] = []
        bare_ms: list[float] = []
        # reconcile without detection, for comparison: another session holds detection's lock,
        # so the step returns at once ("busy") as it does under a concurrent reconcile
        with bench.scratch.connect() as holder:
            holder.autocommit = False
            holder.execute("SELECT pg_advisory_xact_lock(hashtext('jobqueue._detect_alerts'))")
            for _ in range(calls):
                traffic(conn)
                t0 = time.perf_counter()
                conn.execute("SELECT jobqueue.reconcile()")
                bare_ms.append((time.perf_counter() - t0) * 1000)
            holder.rollback()
        for i in range(calls):
            traffic(conn)
            t0 = time.perf_counter()
            conn.execute("SELECT jobqueue.check_alerts()")
            detect_ms.append((time.perf_counter() - t0) * 1000)
            traffic(conn)
            t0 = time.perf_counter()
            conn.execute("SELECT jobqueue.reconcile()")
            reconcile_ms.append((time.perf_counter() - t0) * 1000)
            bench.advance(i + 1)
        tally = conn.execute("SELECT count(*) FROM jobqueue.alert_tally").fetchone()
    shape = {
        "rules": int(rules[0]) if rules else 0,
        "queues": QUEUES,
        "backlog": backlog * QUEUES,
        "history_rows": history,
        "failure_events": failures,
        "tally_rows": int(tally[0]) if tally else 0,
        "traffic_per_call": f"{TRAFFIC_COMPLETED} completed + {TRAFFIC_FAILED} failed",
    }
    for key, label, values in (
        ("alerts.detect", "alert detection step (check_alerts), 50 rules / 10 queues", detect_ms),
        ("alerts.reconcile", "whole reconcile() including detection", reconcile_ms),
        ("alerts.reconcile_without", "reconcile() with detection skipped (same data)", bare_ms),
    ):
        ordered = sorted(values)
        extra: dict[str, Any] = dict(shape)
        extra.update(
            calls=len(values),
            p50_ms=round(statistics.median(ordered), 2),
            max_ms=round(ordered[-1], 2),
            mean_ms=round(statistics.fmean(ordered), 2),
            first_detection_ms=round(first_ms, 1),
        )
        bench.record(
            SCENARIO, key, label, "jobqueue", 1, len(values), Measured(len(values), sum(values) / 1000, False, extra)
        )


def traffic(conn: Any) -> None:
    """One reconcile interval's outcomes, finished now."""
    conn.execute(
        "INSERT INTO jobqueue.job_history (id, queue, type, payload, state, max_attempts, attempt, finished_at) "
        "SELECT nextval('jobqueue.job_id_seq'), 'bench-' || (i %% %s), 'bench.t' || (i %% 5), '{}', 'completed', "
        "25, 1, now() FROM generate_series(1, %s) AS i",
        (QUEUES, TRAFFIC_COMPLETED),
    )
    conn.execute(
        "INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state, detail) "
        "SELECT -i, 'bench-' || (i %% %s), 'processing', 'retrying', '{}' FROM generate_series(1, %s) AS i",
        (QUEUES, TRAFFIC_FAILED),
    )
