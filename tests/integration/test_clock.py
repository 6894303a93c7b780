"""SEC-09 (static half): nothing on the lease path takes a caller's clock.

Every decision about a lease (claim, heartbeat, acknowledgements, reconcile) compares with the
database's ``now()``; a worker passes durations (intervals), never timestamps, so a worker
whose clock is wrong cannot lengthen, shorten or back-date a lease. The runtime half (a
worker started with a skewed clock, CHAOS-06) belongs to the chaos suite.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from jobqueue.sql import queries

#: The SQL API functions a worker calls, and the named statements it runs them through.
LEASE_FUNCTIONS = (
    "claim", "heartbeat", "complete", "complete_many", "fail", "snooze", "release", "add_log", "set_progress",
    "reconcile", "next_due", "register_worker", "worker_heartbeat", "unregister_worker",
)  # fmt: skip
WORKER_QUERIES = (
    "claim", "heartbeat_many", "complete", "complete_many", "fail", "snooze", "release", "add_log", "set_progress",
    "next_due", "register_worker", "worker_heartbeat", "unregister_worker", "reconcile",
)  # fmt: skip
TIME_TYPES = re.compile(r"::\s*(timestamptz|timestamp|date|time)\b", re.IGNORECASE)


def test_no_client_time_in_lease_sql(db: psycopg.Connection[Any]) -> None:
    """SEC-09: lease-path functions have no timestamp parameter; the worker's statements bind none."""
    rows = db.execute(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, "
        "       EXISTS (SELECT 1 FROM unnest(p.proargtypes::oid[]) t(oid) "
        "               WHERE t.oid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype, "
        "                               'time'::regtype, 'timetz'::regtype)) AS takes_time "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'jobqueue' AND p.proname = ANY(%s)",
        (list(LEASE_FUNCTIONS),),
    ).fetchall()
    assert {r["proname"] for r in rows} == set(LEASE_FUNCTIONS), "a lease-path function is missing"
    assert [r for r in rows if r["takes_time"]] == []
    named = queries()
    assert set(WORKER_QUERIES) <= set(named)
    binds_time = {name: TIME_TYPES.findall(named[name]) for name in WORKER_QUERIES if TIME_TYPES.search(named[name])}
    assert binds_time == {}
    # the check itself sees a timestamp parameter where there is one (enqueue's run_at)
    assert TIME_TYPES.search(named["enqueue"])
