"""The counters scenario: the drain with the counter triggers off, then on, in the same run.

Issue 17's counters are kept by statement-level triggers on the job tables (one delta row
per statement and (queue, type), never one per job). This measures what they cost the
drain: the same N no-op jobs drained by the same burst worker, first in a scratch database
whose counter triggers are disabled (``ALTER TABLE ... DISABLE TRIGGER``), then in a fresh
one where they are on, alternating ``ROUNDS`` times so that a machine whose load drifts
shows it in both. Only with ``--only counters`` (registered on demand).
"""

from __future__ import annotations

from jobqueue.bench.config import Budget
from jobqueue.bench.core import Bench
from jobqueue.bench.registry import scenario
from jobqueue.bench.statements import COUNTER_DELTA_ROWS, COUNTER_TRIGGERS_OFF

ROUNDS = 3


@scenario("counters", on_demand=True)
def counters(bench: Bench, budget_s: float) -> None:
    n, concurrency = bench.config.n, bench.config.best_concurrency
    budget = Budget(budget_s, 2 * ROUNDS)

    def triggers_off() -> None:
        with bench.scratch.connect() as conn:
            for statement in COUNTER_TRIGGERS_OFF:
                conn.execute(statement)

    def delta_rows() -> int:
        """Counter rows the drain left (0 with the triggers off; with them on, one per statement)."""
        with bench.scratch.connect() as conn:
            row = conn.execute(COUNTER_DELTA_ROWS).fetchone()
        return int(row[0]) if row else 0

    for r in range(1, ROUNDS + 1):
        suffix = "" if r == 1 else f".r{r}"
        label = f"counters: drain {n:,}, counter triggers off (round {r})"
        m = bench.drain_burst(1, concurrency, n, budget.phase(), label, setup=triggers_off)
        m.extra["counter_rows"] = delta_rows()
        bench.record("counters", f"counters.off{suffix}", f"drain, counters off (round {r})", "jobqueue", 1, n, m)
        label = f"counters: drain {n:,}, counter triggers on (round {r})"
        m = bench.drain_burst(1, concurrency, n, budget.phase(), label)
        m.extra["counter_rows"] = delta_rows()
        row = bench.record("counters", f"counters.on{suffix}", f"drain, counters on (round {r})", "jobqueue", 1, n, m)
        bench.compare(row, f"counters.off{suffix}")
