"""Calling the jobqueue SQL API from tests: named arguments, table snapshots, moving DB time.

Tests never sleep to let time pass: they move the database's notion of "later" by editing
rows as the owner (a lease into the past, a run time into the past).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

#: Every jobqueue table (job_history includes its partitions).
TABLES = ("job", "job_history", "dead_letter", "job_event", "job_log", "queue", "worker", "retry_policy")


def _adapt(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict) else value


def api(function: str, *args: Any, **kwargs: Any) -> tuple[sql.Composed, list[Any]]:
    """``SELECT * FROM jobqueue.<function>(args, name => value, ...)`` and its parameters."""
    items = [sql.Placeholder() for _ in args]
    items += [sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder()) for name in kwargs]
    query = sql.SQL("SELECT * FROM jobqueue.{}({})").format(sql.Identifier(function), sql.SQL(", ").join(items))
    return query, [_adapt(v) for v in (*args, *kwargs.values())]


def rows(conn: psycopg.Connection[Any], function: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """All rows a jobqueue function returns (dict rows)."""
    query, params = api(function, *args, **kwargs)
    return conn.execute(query, params).fetchall()


def one(conn: psycopg.Connection[Any], function: str, *args: Any, **kwargs: Any) -> Any:
    """The single value of a scalar jobqueue function."""
    query, params = api(function, *args, **kwargs)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def enqueue(conn: psycopg.Connection[Any], type: str = "test.job", **kwargs: Any) -> int:
    return int(one(conn, "enqueue", type, **kwargs))


def claim(conn: psycopg.Connection[Any], queues: list[str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return rows(conn, "claim", queues or ["default"], **kwargs)


def claim_one(conn: psycopg.Connection[Any], queues: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    got = claim(conn, queues, **kwargs)
    assert len(got) == 1, got
    return got[0]


def expire_lease(db: psycopg.Connection[Any], job_id: int) -> None:
    """As the owner: the job's lease ran out a second ago."""
    db.execute("UPDATE jobqueue.job SET lease_expires_at = now() - interval '1 second' WHERE id = %s", [job_id])


def make_due(db: psycopg.Connection[Any], job_id: int) -> None:
    """As the owner: the job's run time (delay, retry backoff) has come."""
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '1 second' WHERE id = %s", [job_id])


def job(db: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    """The job's row from jobqueue.jobs (any state)."""
    row = db.execute("SELECT * FROM jobqueue.jobs WHERE id = %s", [job_id]).fetchone()
    assert row is not None, f"no job {job_id}"
    return row


def hot_row(db: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    """The job's full row in the hot table, or None."""
    return db.execute("SELECT * FROM jobqueue.job WHERE id = %s", [job_id]).fetchone()


#: A job's audit trail in the order it happened. ORDER BY id, not at: the schema says "id
#: orders events" (one sequence; a job's transitions are serialized by its row lock, so its
#: events take ids in order), while ``at`` is clock_timestamp(): it can tie, and it steps back
#: when the server's clock does (NTP), which would reorder a trail that did not change.
EVENTS = (
    "SELECT job_id, token, from_state::text, to_state::text, actor, detail FROM jobqueue.job_event "
    "WHERE job_id = ANY(%s) ORDER BY id"
)


def events(db: psycopg.Connection[Any], job_id: int) -> list[dict[str, Any]]:
    """The job's events (job_id, token, from_state, to_state, actor, detail), in order."""
    return events_by_job(db, [job_id]).get(job_id, [])


def events_by_job(conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each job's events, in order (any row factory: rows are read as dicts)."""
    out: dict[int, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(EVENTS, [ids]):
            out.setdefault(row["job_id"], []).append(row)
    return out


def transitions(db: psycopg.Connection[Any], job_id: int) -> list[tuple[str | None, str | None]]:
    return [(e["from_state"], e["to_state"]) for e in events(db, job_id)]


def counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    """Row count of every jobqueue table."""
    return {
        t: db.execute(sql.SQL("SELECT count(*) AS n FROM jobqueue.{}").format(sql.Identifier(t))).fetchone()["n"]
        for t in TABLES
    }


def snapshot(db: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    """Every row of every jobqueue table (sorted text form), to prove nothing changed."""
    out = {}
    for t in TABLES:
        rows_ = db.execute(sql.SQL("SELECT x::text AS r FROM jobqueue.{} x").format(sql.Identifier(t))).fetchall()
        out[t] = sorted(r["r"] for r in rows_)
    return out
