"""The counters scenario: the drain with the counter triggers off, then on, in the same run.

Issue 17's counters are kept by statement-level triggers on the job tables (one delta row
per statement and (queue, type), never one per job). This measures what they cost the
drain: the same N no-op jobs drained by the same burst worker, first in a scratch database
whose counter triggers are disabled (``ALTER TABLE ... DISABLE TRIGGER``), then in a fresh
one where they are on, ``ROUNDS`` pairs, the order swapped every other pair, so that a machine
whose load drifts shows it in both. Then the statement itself, less exposed to a busy machine: one
``complete_many`` of ``STATEMENT_BATCH`` claimed jobs timed ``STATEMENT_ROUNDS`` times with
the triggers off and as often on, alternating, on one connection (rows
``counters.statement.off`` / ``.on``: jobs/s over the summed time, the median call in
``extra``). Only with ``--only counters`` (registered on demand).
"""

from __future__ import annotations

import statistics
import time

from jobqueue.bench.config import Budget, Measured
from jobqueue.bench.core import Bench
from jobqueue.bench.registry import scenario
from jobqueue.bench.statements import (
    CLAIM_BATCH,
    COMPLETE_BATCH,
    COUNTER_TALLY,
    COUNTER_TRIGGERS_OFF,
    COUNTER_TRIGGERS_ON,
)

ROUNDS = 3
STATEMENT_BATCH = 1000
STATEMENT_ROUNDS = 10


@scenario("counters", on_demand=True)
def counters(bench: Bench, budget_s: float) -> None:
    n, concurrency = bench.config.n, bench.config.best_concurrency
    budget = Budget(budget_s, 2 * ROUNDS + 1)

    def triggers_off() -> None:
        with bench.scratch.connect() as conn:
            for statement in COUNTER_TRIGGERS_OFF:
                conn.execute(statement)

    def tally(m: Measured) -> None:
        """What the counters saw: completions counted (N with the triggers on, 0 off) and the
        delta rows not yet folded by the worker's reconcile (one per statement, not per job)."""
        with bench.scratch.connect() as conn:
            row = conn.execute(COUNTER_TALLY).fetchone()
        m.extra["completed_counted"], m.extra["counter_rows"] = (int(row[0]), int(row[1])) if row else (0, 0)

    for r in range(1, ROUNDS + 1):
        suffix = "" if r == 1 else f".r{r}"
        # off first in odd rounds, on first in even ones: whatever favours the first (or the
        # second) drain of a pair does not favour one setting
        rows = {}
        for state in ("off", "on") if r % 2 else ("on", "off"):
            label = f"counters: drain {n:,}, counter triggers {state} (round {r})"
            setup = triggers_off if state == "off" else None
            m = bench.drain_burst(1, concurrency, n, budget.phase(), label, setup=setup)
            tally(m)
            case = f"drain, counters {state} (round {r})"
            rows[state] = bench.record("counters", f"counters.{state}{suffix}", case, "jobqueue", 1, n, m)
        bench.compare(rows["on"], f"counters.off{suffix}")
    statement_cost(bench, budget.phase())


def statement_cost(bench: Bench, deadline: float) -> None:
    """complete_many of STATEMENT_BATCH jobs, triggers off and on alternately, one connection."""
    batch = min(STATEMENT_BATCH, max(10, bench.config.n // 20))  # --quick: small batches
    bench.scratch.reset()
    bench.load_jobs(2 * STATEMENT_ROUNDS * batch, "counters: loading jobs for the statement cost")
    bench.begin(f"counters: complete_many({batch:,}) x {2 * STATEMENT_ROUNDS}, triggers off / on", 2 * STATEMENT_ROUNDS)
    took: dict[str, list[float]] = {"off": [], "on": []}
    with bench.scratch.connect() as conn:
        for i in range(2 * STATEMENT_ROUNDS):
            if time.monotonic() > deadline:
                break
            state = "off" if i % 2 == 0 else "on"
            for statement in COUNTER_TRIGGERS_OFF if state == "off" else COUNTER_TRIGGERS_ON:
                conn.execute(statement)
            claimed = conn.execute(CLAIM_BATCH, (batch,)).fetchall()
            ids, tokens = [r[0] for r in claimed], [r[1] for r in claimed]
            started = time.perf_counter()
            conn.execute(COMPLETE_BATCH, (ids, tokens)).fetchone()
            took[state].append(time.perf_counter() - started)
            bench.advance(i + 1)
    for state in ("off", "on"):
        times = took[state]
        m = Measured(batch * len(times), sum(times), len(times) < STATEMENT_ROUNDS)
        m.extra["calls"] = len(times)
        m.extra["median_ms"] = round(statistics.median(times) * 1000, 2) if times else None
        label = f"complete_many({batch:,}), counters {state}"
        row = bench.record("counters", f"counters.statement.{state}", label, "jobqueue", 1, batch * len(times), m)
        if state == "on":
            bench.compare(row, "counters.statement.off")
