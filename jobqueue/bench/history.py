"""The history scenario: the drain with 1,000,000 finished jobs retained vs none."""

from __future__ import annotations

from jobqueue.bench.config import HISTORY_CHUNK, Budget
from jobqueue.bench.core import Bench, chunks
from jobqueue.bench.registry import scenario
from jobqueue.bench.statements import HISTORY_INSERT


@scenario("history")
def history(bench: Bench, budget_s: float) -> None:
    n, retained = bench.config.n, bench.config.history_rows
    concurrency = bench.config.best_concurrency
    budget = Budget(budget_s, 2)
    m = bench.drain_burst(1, concurrency, n, budget.phase(), f"history: drain {n:,}, no finished jobs retained")
    m.extra["retained"] = 0
    bench.record("history", "history.empty", "drain, 0 finished jobs retained", "jobqueue", 1, n, m)

    def fill() -> None:
        bench.begin(f"history: inserting {retained:,} finished jobs", retained)
        with bench.scratch.connect() as conn:
            for start, size in chunks(retained, HISTORY_CHUNK):
                conn.execute(HISTORY_INSERT, (start + 1, start + size))
                bench.advance(start + size)
            conn.execute("VACUUM ANALYZE jobqueue.job_history")

    label = f"history: drain {n:,}, {retained:,} finished jobs retained"
    m = bench.drain_burst(1, concurrency, n, budget.phase(), label, setup=fill)
    m.extra["retained"] = retained
    row = bench.record(
        "history", "history.retained", f"drain, {retained:,} finished jobs retained", "jobqueue", 1, n, m
    )
    bench.compare(row, "history.empty")
