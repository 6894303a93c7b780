"""Issue 13: what a large backlog costs the periodic work (no timing: rows read, counted by the server).

Throughput under a growing backlog collapsed because reconcile's priority-aging step joined
every job to its queue: once the table's statistics said it was big, the planner walked all
of job_pkey for it on every reconcile, with aging off too (a statement as long as the
backlog, run by every worker every few seconds, holding back the xmin horizon while it ran).
These tests count the rows of jobqueue.job a reconcile reads in its own transaction
(pg_stat_xact_user_tables: this backend's counts, not yet flushed, so nothing else mixes in).
The throughput itself is measured by `jobqueue bench --only overload` and guarded by
tests/soak/test_soak.py::test_overload_throughput.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.support.sql_api import claim, claim_one, enqueue, job, one

Conn = psycopg.Connection[Any]

BACKLOG = 100_000
#: Rows a reconcile may read from jobqueue.job besides the aging step (its other steps read
#: through partial indexes that are empty here): far below the backlog.
READ_BOUND = 50

JOB_READS = """
SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n
FROM pg_stat_xact_user_tables WHERE relid = 'jobqueue.job'::regclass
"""


def _backlog(db: Conn, queue: str = "default", n: int = BACKLOG) -> None:
    # jobqueue.queue keeps the statistics it had when it was empty (a few rows never reach its
    # autoanalyze threshold), as in a fresh install.
    db.execute("ANALYZE jobqueue.queue")
    db.execute(
        "SELECT count(*) FROM jobqueue.enqueue_batch(array_fill('bulk'::text, ARRAY[%s]), "
        "array_fill('{}'::jsonb, ARRAY[%s]), array_fill(%s::text, ARRAY[%s]))",
        [n, n, queue, n],
    )
    # what autoanalyze tells the planner once the backlog has grown (the plan flip of issue 13)
    db.execute("ANALYZE jobqueue.job")


def _reconcile_reads(db: Conn, **kwargs: Any) -> tuple[dict[str, Any], int]:
    with db.transaction():
        summary = one(db, "reconcile", **kwargs)
        row = db.execute(JOB_READS).fetchone()
    assert row is not None
    return summary, int(row["n"])


def test_reconcile_reads_no_backlog_when_no_queue_ages(db: Conn) -> None:
    """With aging off everywhere (the default), reconcile reads none of the waiting jobs.

    Checked to fail on revision 0004: the aging step read all 100,000 (a walk of job_pkey).
    """
    _backlog(db)
    summary, reads = _reconcile_reads(db)
    assert summary["aged"] == 0
    assert reads < READ_BOUND, f"reconcile read {reads} rows of jobqueue.job with a backlog of {BACKLOG}"
    _, reads = _reconcile_reads(db, dry_run=True)
    assert reads < READ_BOUND


def test_aging_reads_only_the_queues_that_enable_it(db: Conn) -> None:
    """A queue with aging on next to a big one without: only the aging queue's jobs are read,
    and aging still does what it did (docs/sql-api.md, reconcile step 5)."""
    _backlog(db)
    one(db, "configure_queue", "aq", {"aging_interval": 60})
    old_low = enqueue(db, queue="aq", priority=0)
    fresh = enqueue(db, queue="aq", priority=3)
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '5 minutes 30 seconds' WHERE id = %s", [old_low])
    dry, reads = _reconcile_reads(db, dry_run=True)
    assert dry["aged"] == 1 and job(db, old_low)["priority"] == 0
    assert reads < READ_BOUND
    summary, reads = _reconcile_reads(db)
    assert summary["aged"] == 1
    assert reads < READ_BOUND, f"reconcile read {reads} rows of jobqueue.job for 2 jobs of an aging queue"
    assert job(db, old_low)["priority"] == 5 and job(db, fresh)["priority"] == 3
    assert one(db, "reconcile")["aged"] == 0  # never twice for the same wait
    assert [r["id"] for r in claim(db, ["aq"], batch=2)] == [old_low, fresh]


def test_aging_respects_the_batch_and_a_blocked_job_ages_once_unblocked(db: Conn) -> None:
    one(db, "configure_queue", "aq", {"aging_interval": 60})
    parent = enqueue(db, queue="parents")
    blocked = enqueue(db, queue="aq", priority=0, depends_on=[parent])
    waiting = [enqueue(db, queue="aq", priority=0) for _ in range(3)]
    db.execute(
        "UPDATE jobqueue.job SET run_at = now() - interval '3 minutes 10 seconds' WHERE id = ANY(%s)",
        [[blocked, *waiting]],
    )
    assert one(db, "reconcile", batch=2)["aged"] == 2
    assert one(db, "reconcile", batch=2)["aged"] == 1
    assert sorted(job(db, w)["priority"] for w in waiting) == [3, 3, 3]
    assert job(db, blocked)["priority"] == 0  # blocked: its priority decides nothing yet
    one(db, "complete", parent, claim_one(db, ["parents"])["token"])
    assert one(db, "reconcile")["aged"] == 1
    assert job(db, blocked)["priority"] == 3  # the whole wait since run_at counts
