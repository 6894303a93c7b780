"""The shared test helpers (tests/support/) can tell right from wrong.

Each was chosen between copies that disagreed; these pin the choice, so that a helper that
drifts back fails here rather than silently weakening the tests that use it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.support.plans import explained, nodes, plans_in
from tests.support.sql_api import events, transitions


def test_events_follow_id_not_the_clock(db: psycopg.Connection[Any]) -> None:
    """A trail whose `at` went backwards (the server's clock stepped back) keeps its real order."""
    db.execute(
        "INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state, at) VALUES "
        "(-1, 'q', NULL, 'pending', now()), "
        "(-1, 'q', 'pending', 'processing', now() - interval '1 minute'), "
        "(-1, 'q', 'processing', 'completed', now() - interval '2 minutes')"
    )
    assert transitions(db, -1) == [(None, "pending"), ("pending", "processing"), ("processing", "completed")]
    assert [e["job_id"] for e in events(db, -1)] == [-1, -1, -1]
    assert events(db, -2) == []


def test_plans_are_the_documents_with_a_plan(db: psycopg.Connection[Any]) -> None:
    plan = '{"Query Text": "SELECT 1", "Plan": {"Node Type": "Result"}}'
    notices = [
        f"duration: 0.010 ms  plan:\n{plan}",
        'a notice that mentions "Query Text" and "Plan" {but is not JSON',
        '{"Query Text": "no plan here"}',
        "no braces at all",
    ]
    assert plans_in(notices) == [{"Query Text": "SELECT 1", "Plan": {"Node Type": "Result"}}]
    with explained(db) as plans:
        db.execute("SELECT count(*) FROM jobqueue.job")
    assert plans and all("Plan" in p for p in plans)
    assert any(n.get("Relation Name") == "job" for p in plans for n in nodes(p["Plan"]))
    # auto_explain is off again after the block
    with db.cursor() as cur:
        notices.clear()
        db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        cur.execute("SELECT 1")
    assert plans_in(notices) == []
