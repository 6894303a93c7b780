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
#: The default queue_depth alert rule's threshold: detection counts a queue's runnable jobs up
#: to it (docs/guarantees.md section 9).
DEPTH_THRESHOLD = 10_000

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
    # this backend's counts not yet flushed: they can carry earlier transactions', so a delta
    with db.transaction():
        before = db.execute(JOB_READS).fetchone()
        summary = one(db, "reconcile", **kwargs)
        row = db.execute(JOB_READS).fetchone()
    assert row is not None and before is not None
    return summary, int(row["n"]) - int(before["n"])


def test_reconcile_reads_no_backlog_when_no_queue_ages(db: Conn) -> None:
    """With aging off everywhere (the default), reconcile reads none of the waiting jobs but
    what the queue_depth alert rule counts: at most its threshold + 1 per queue.

    Checked to fail on revision 0004: the aging step read all 100,000 (a walk of job_pkey);
    and before the depth count ran once per rule (OFFSET 0), it read 30,013 (three counts).
    """
    _backlog(db)
    summary, reads = _reconcile_reads(db)
    assert summary["aged"] == 0
    assert reads < DEPTH_THRESHOLD + 1 + READ_BOUND, f"reconcile read {reads} rows with a backlog of {BACKLOG}"
    one(db, "set_alert_rule", "queue_depth", {"enabled": False})
    summary, reads = _reconcile_reads(db)
    assert reads < READ_BOUND, f"reconcile read {reads} rows of jobqueue.job with a backlog of {BACKLOG}"
    _, reads = _reconcile_reads(db, dry_run=True)
    assert reads < READ_BOUND


def test_aging_reads_only_the_queues_that_enable_it(db: Conn) -> None:
    """A queue with aging on next to a big one without: only the aging queue's jobs are read,
    and aging still does what it did (docs/sql-api.md, reconcile step 5)."""
    _backlog(db)
    one(db, "set_alert_rule", "queue_depth", {"enabled": False})  # counted in the test above
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


CLAIM_INDEX_PAGES = """
SELECT coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0) AS n
FROM pg_statio_user_indexes WHERE indexrelid = 'jobqueue.job_claim_idx'::regclass
"""


def _claim_index_pages(db: Conn) -> int:
    """Pages of job_claim_idx read so far (this backend's counts flushed first)."""
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT 1")  # the flush happens at the end of a transaction
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(CLAIM_INDEX_PAGES).fetchone()
    assert row is not None
    return int(row["n"])


def test_a_claim_planned_on_an_empty_queue_reads_only_its_batch_once_the_backlog_grows(db: Conn) -> None:
    """The collapse of issue 13: claim's generic plan is made once per connection, at its first
    call. Made while jobqueue.job was empty (a fresh install, a worker started before the
    producers), the statement's UPDATE fetched the locked rows through job_claim_idx with
    `id = ANY(...)` on its last column — a walk of the whole index, as long as the backlog, on
    every claim, until an autoanalyze invalidated the plan. Counted, not timed: the pages of
    job_claim_idx a claim reads (pg_statio_user_indexes).

    Checked to fail on revision 0008: a claim of 32 read 400+ pages of a 100,000-entry index.
    """
    db.execute("SET stats_fetch_consistency = none")
    db.execute("ALTER TABLE jobqueue.job SET (autovacuum_enabled = off)")
    assert claim(db, batch=32) == []  # the plan is made now, on an empty table
    db.execute(
        "SELECT count(*) FROM jobqueue.enqueue_batch(array_fill('bulk'::text, ARRAY[%s]), "
        "array_fill('{}'::jsonb, ARRAY[%s]), array_fill('default'::text, ARRAY[%s]))",
        [BACKLOG, BACKLOG, BACKLOG],
    )
    # each job its own run_at, as jobs enqueued over time have (one statement gave them one)
    db.execute("UPDATE jobqueue.job SET run_at = run_at - (%s - id) * interval '1 millisecond'", [BACKLOG])
    for _ in range(3):
        before = _claim_index_pages(db)
        assert len(claim(db, batch=32)) == 32
        pages = _claim_index_pages(db) - before
        assert pages < 20, f"a claim of 32 read {pages} pages of job_claim_idx with a backlog of {BACKLOG}"


def _vacuum_report(db: Conn) -> str:
    """VACUUM (VERBOSE) jobqueue.job: its report (one INFO message, a line per step)."""
    messages: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        messages.append(diag.message_primary or "")

    db.add_notice_handler(keep)
    try:
        db.execute("VACUUM (VERBOSE) jobqueue.job")
    finally:
        db.remove_notice_handler(keep)
    report = "\n".join(m for m in messages if "index scans:" in m)
    assert report, messages
    return report


def test_vacuum_clears_claimed_entries_from_the_claim_index_however_few_pages_hold_them(db: Conn) -> None:
    """Revision 0020: a claim leaves the version it claimed dead, its entry at the head of
    job_claim_idx where every later claim starts. Under vacuum's default (index_cleanup auto)
    the index pass is skipped while such rows sit on under 2 % of the table's pages, a share
    that grows with the backlog: at 4.5 million waiting one vacuum left 106,857 dead entries
    for the claims to step over (docs/performance.md, "The vacuum that skipped the claim
    index"). jobqueue.job turns the bypass off; the same table with the option reset (the
    second half, which also proves the backlog is large enough to trigger it) skips the pass.
    """
    db.execute("ALTER TABLE jobqueue.job SET (autovacuum_enabled = off)")  # the test's own vacuums only
    _backlog(db, n=20_000)
    db.execute("VACUUM jobqueue.job")  # a clean start: nothing dead
    assert len(claim(db, batch=20)) == 20  # 20 dead versions on one or two of ~400 pages
    report = _vacuum_report(db)
    assert "index scans: 1" in report and "bypassed" not in report, report

    db.execute("ALTER TABLE jobqueue.job RESET (vacuum_index_cleanup)")
    assert len(claim(db, batch=20)) == 20
    report = _vacuum_report(db)
    assert "index scans: 0" in report and "index scan bypassed" in report, report
