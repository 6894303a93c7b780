"""The API's job list is index-backed: 50 jobs by state and queue out of many finished ones
read about 50 rows through ordered index scans, and the capped total stops at its cap
(issue 18: a list never counts a million rows)."""

from __future__ import annotations

from typing import Any

import psycopg

from jobqueue.sql import query
from tests.support.plans import explained, nodes

#: Finished jobs in the table (spread over 20 queues) and the cap of the total.
ROWS = 200_000
CAP = 10_000


def _params(**given: Any) -> dict[str, Any]:
    names = ("states", "queue", "type", "tenant_id", "tag", "created_by", "created_after", "created_before",
             "finished_after", "finished_before", "before_id")
    return {**dict.fromkeys(names), **given}


def _plan(db: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """The plan, with actual row counts, of the statement jobqueue.list_jobs runs inside."""
    with explained(db) as plans:
        db.execute("SET auto_explain.log_analyze = on")
        db.execute(sql, params, prepare=False).fetchall()
    inner = [p for p in plans if "jobqueue.job_history" in p.get("Query Text", "") and "EXECUTE" not in p["Query Text"]]
    assert inner, [p.get("Query Text") for p in plans]
    return dict(inner[0]["Plan"])


def test_listing_50_by_state_and_queue_uses_indexes_and_reads_few_rows(db: psycopg.Connection[Any]) -> None:
    db.execute(
        "INSERT INTO jobqueue.job_history (id, queue, type, state, payload, max_attempts, finished_at, created_at) "
        "SELECT nextval('jobqueue.job_id_seq'), 'q' || (g %% 20), 't', "
        "       CASE WHEN g %% 10 = 0 THEN 'cancelled' ELSE 'completed' END::jobqueue.job_state, '{}', 1, "
        "       now() - (g || ' ms')::interval, now() - (g || ' ms')::interval "
        "FROM generate_series(1, %s) AS g",
        [ROWS],
    )
    db.execute("ANALYZE jobqueue.job_history")
    db.execute("ANALYZE jobqueue.dead_letter")
    db.execute("ANALYZE jobqueue.job")

    plan = _plan(db, query("list_jobs"), {**_params(states=["completed"], queue="q7"), "limit": 50})
    assert plan["Node Type"] == "Limit" and plan["Actual Rows"] == 50, plan
    history_scans = [n for n in nodes(plan) if str(n.get("Relation Name", "")).startswith("job_history")]
    assert history_scans, plan
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in history_scans), history_scans
    assert any("queue_id" in n.get("Index Name", "") for n in history_scans), history_scans
    read = sum(n.get("Actual Rows", 0) * n.get("Actual Loops", 1) for n in history_scans)
    assert read < 1_000, f"read {read} finished jobs to list 50"

    capped = f"SELECT count(*) AS n FROM ({query('list_jobs')}) AS page"
    plan = _plan(db, capped, {**_params(states=["completed"]), "limit": CAP + 1})
    limits = [n for n in nodes(plan) if n["Node Type"] == "Limit"]
    assert limits and limits[0]["Actual Rows"] == CAP + 1, plan
    history_scans = [n for n in nodes(plan) if str(n.get("Relation Name", "")).startswith("job_history")]
    read = sum(n.get("Actual Rows", 0) * n.get("Actual Loops", 1) for n in history_scans)
    assert read < ROWS / 2, f"counted {read} of {ROWS} rows for a total capped at {CAP}"
