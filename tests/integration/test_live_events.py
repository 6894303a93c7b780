"""The live stream's source: jobqueue.job_events read after a cursor (jobqueue/web/live.py).

Real connections commit out of id order and hold transactions open while the follower
reads; the follower must deliver every committed event exactly once, and a client that
resumes from any cursor it was given must miss nothing still in the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

pytest.importorskip("starlette")

from jobqueue.web.live import Cursor, CursorError, EventFollower, start_cursor

# The cursor may pass only ids final at a pass's snapshot, whose xmin is the whole server's:
# a transaction of a test running beside these (pytest -n) holds the cursor back, as it would
# in production, and the assertions about where the cursor stands assume nothing else runs.
pytestmark = pytest.mark.serial

Connect = Callable[..., psycopg.Connection[Any]]


def _enqueue(conn: psycopg.Connection[Any], queue: str = "live") -> int:
    row = conn.execute("SELECT jobqueue.enqueue('t', '{}', %s) AS id", (queue,)).fetchone()
    assert row is not None
    return int(row["id"])


def _queues(conn: psycopg.Connection[Any], *names: str) -> None:
    # registered first: a new queue's registration row would make a second writer wait
    for name in names:
        conn.execute("SELECT jobqueue.configure_queue(%s, '{}')", (name,))


def _event_ids(db: psycopg.Connection[Any], job_ids: list[int]) -> set[int]:
    rows = db.execute(
        "SELECT e.id FROM unnest(%s::bigint[]) AS j(id), jobqueue.job_events(of_job => j.id) AS e", (job_ids,)
    ).fetchall()
    return {int(r["id"]) for r in rows}


def test_a_late_commit_of_a_lower_id_is_delivered_and_a_resumed_cursor_misses_nothing(connect: Connect) -> None:
    reader, a, b = connect(), connect(autocommit=False), connect()
    _queues(reader, "live")
    follower = EventFollower(start_cursor(None, "cursor"))
    assert follower.read(reader) == []
    # a takes the lower event id and holds it uncommitted; b takes the next one and commits
    job_a = _enqueue(a)
    job_b = _enqueue(b)
    first = follower.read(reader)
    assert [e["job_id"] for e in first] == [job_b]
    resume_from = follower.cursor  # what a client holds if it disconnects now
    assert resume_from.after < first[0]["id"], "the cursor must not pass an id still in flight"
    a.commit()
    second = follower.read(reader)
    assert [e["job_id"] for e in second] == [job_a]
    assert follower.read(reader) == []  # each event once
    # a client that reconnects with the cursor it had gets job a's event too
    resumed = EventFollower(resume_from)
    got = {e["job_id"] for e in resumed.read(reader)}
    assert job_a in got


def test_a_transaction_open_for_seconds_is_not_lost_to_the_time_bound(connect: Connect) -> None:
    reader, a, b = connect(), connect(autocommit=False), connect()
    _queues(reader, "live")
    follower = EventFollower(start_cursor(None, "cursor"))
    follower.read(reader)
    job_a = _enqueue(a)  # its event's `at` is now; it commits seconds later
    seen: list[int] = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        _enqueue(b)
        seen += [e["job_id"] for e in follower.read(reader)]
        time.sleep(0.2)
    assert job_a not in seen
    bound = follower.cursor.since
    a.commit()
    assert bound <= _at_of(reader, job_a), "the time bound passed an event still in flight"
    seen += [e["job_id"] for e in follower.read(reader)]
    assert job_a in seen
    assert len(seen) == len(set(seen))


def _at_of(conn: psycopg.Connection[Any], job_id: int) -> Any:
    row = conn.execute("SELECT min(at) AS at FROM jobqueue.job_events(of_job => %s)", (job_id,)).fetchone()
    assert row is not None
    return row["at"]


def test_many_writers_committing_in_any_order_each_event_exactly_once(connect: Connect) -> None:
    reader = connect()
    _queues(reader, "q0", "q1", "q2", "q3")
    writers = [connect(autocommit=False) for _ in range(4)]
    follower = EventFollower(start_cursor(None, "cursor"), batch=7)  # small pages: truncated reads too
    follower.read(reader)
    delivered: list[int] = []
    jobs: list[int] = []
    for round_ in range(6):
        for i, w in enumerate(writers):
            jobs.append(_enqueue(w, f"q{i}"))
            jobs.append(_enqueue(w, f"q{i}"))
        # commit in a different order each round, reading between commits
        order = writers[round_ % 4 :] + writers[: round_ % 4]
        for w in reversed(order) if round_ % 2 else order:
            w.commit()
            delivered += [e["id"] for e in follower.read(reader)]
    while True:
        more = follower.read(reader)
        delivered += [e["id"] for e in more]
        if not more and not follower.truncated:
            break
    assert len(delivered) == len(set(delivered)), "an event was delivered twice"
    assert set(delivered) == _event_ids(reader, jobs)


def test_cursor_round_trip_and_bad_cursors_name_the_field() -> None:
    c = start_cursor(None, "cursor")
    assert Cursor.decode(c.encode()) == Cursor(c.after, c.since.replace(microsecond=c.since.microsecond))
    for bad in ("", "x", "12", "12.", ".5", "-1.5", "1.2.3", "9" * 30 + ".1"):
        with pytest.raises(CursorError, match="Last-Event-ID"):
            Cursor.decode(bad, "Last-Event-ID")


def test_job_events_refuses_bad_arguments_naming_the_field(db: psycopg.Connection[Any]) -> None:
    for call, field in (
        ("SELECT * FROM jobqueue.job_events(max_rows => 0, since => now())", "max_rows"),
        ("SELECT * FROM jobqueue.job_events()", "since"),
        ("SELECT * FROM jobqueue.event_counts('0 s')", "window"),
        ("SELECT * FROM jobqueue.event_counts('1 day', '1 second')", "step"),
    ):
        with pytest.raises(psycopg.Error, match=field):
            db.execute(call)


def test_event_counts_buckets_completions_and_failures(db: psycopg.Connection[Any]) -> None:
    for _ in range(3):
        _enqueue(db, "counted")
    claimed = db.execute("SELECT id, token FROM jobqueue.claim(ARRAY['counted'], 'w', 3)").fetchall()
    db.execute("SELECT jobqueue.complete(%s, %s)", (claimed[0]["id"], claimed[0]["token"]))
    db.execute("SELECT jobqueue.complete(%s, %s)", (claimed[1]["id"], claimed[1]["token"]))
    db.execute("SELECT jobqueue.fail(%s, %s, 'boom')", (claimed[2]["id"], claimed[2]["token"]))
    rows = db.execute("SELECT * FROM jobqueue.event_counts('1 hour', '1 minute') WHERE queue = 'counted'").fetchall()
    assert sum(r["completed"] for r in rows) == 2
    assert sum(r["failed"] for r in rows) == 1


def test_queue_changes_are_streamed_once_each_and_only_when_asked_for(db: psycopg.Connection[Any]) -> None:
    """Pause, resume and configure write a queue change (job_id NULL) that the stream reads
    with the job events and the same cursor; a change that changes nothing writes nothing;
    job_events without queue_changes (the public default) returns none of them."""
    db.execute("SELECT jobqueue.configure_queue('qc', '{}')")  # the queue exists, with no setting: nothing written
    follower = EventFollower(start_cursor(None, "cursor"))
    assert follower.read(db) == []
    resume_from = follower.cursor
    job = _enqueue(db, "qc")
    db.execute("SELECT jobqueue.pause_queue('qc')")
    db.execute("SELECT jobqueue.pause_queue('qc')")  # already paused: no change
    db.execute("""SELECT jobqueue.configure_queue('qc', '{"max_attempts": 4}')""")
    db.execute("""SELECT jobqueue.configure_queue('qc', '{"max_attempts": 4}')""")  # the same: no change
    db.execute("SELECT jobqueue.resume_queue('qc')")
    db.execute("SELECT jobqueue.pause_queue('qc-new')")  # a queue made paused
    got = follower.read(db)
    seen = [(e["job_id"], e["queue"], (e["detail"] or {}).get("change")) for e in got]
    assert seen == [(job, "qc", None), (None, "qc", "paused"), (None, "qc", "configured"), (None, "qc", "resumed"),
                    (None, "qc-new", "paused")]
    assert follower.read(db) == []  # each once
    # resumed from an earlier cursor: all of them again
    again = EventFollower(resume_from).read(db)
    assert [e["id"] for e in again] == [e["id"] for e in got]
    plain = db.execute("SELECT job_id FROM jobqueue.job_events(since => now() - interval '1 hour')").fetchall()
    assert plain and all(r["job_id"] is not None for r in plain)
    # the audit trail's other readers are not misled: a queue change is no job event
    assert db.execute("SELECT count(*) AS n FROM jobqueue.job_events(of_job => %s)", (job,)).fetchone() == {"n": 1}


def _drain(follower: EventFollower, conn: psycopg.Connection[Any], reads: int) -> list[int]:
    """Read as follow() does (at once again while truncated) until a read is not truncated."""
    got: list[int] = []
    for _ in range(reads):
        got += [e["id"] for e in follower.read(conn)]
        if not follower.truncated:
            return got
    raise AssertionError(f"still truncated after {reads} reads: the stream does not get past a full page")


def test_a_burst_of_more_events_than_a_page_is_delivered_page_by_page(connect: Connect) -> None:
    reader, writer, holder = connect(), connect(autocommit=False), connect(autocommit=False)
    _queues(reader, "burst", "held")
    follower = EventFollower(start_cursor(None, "cursor"), batch=7)
    follower.read(reader)
    held = _enqueue(holder, "held")  # a lower id in flight: the cursor may not pass it
    held_event = min(_event_ids(holder, [held]))  # seen in its own transaction only
    jobs = [_enqueue(writer, "burst") for _ in range(30)]
    writer.commit()
    # 30 events over pages of 7: each read goes on after the last page (it read the same 7
    # over and over, and the stream froze); 5 pages and the end, in at most 6 reads
    first = _drain(follower, reader, reads=6)
    assert sorted(first) == sorted(_event_ids(reader, jobs)) and len(first) == len(set(first))
    assert follower.cursor.after < held_event, "the cursor passed an id in flight"
    # the next pass re-reads from the safe cursor: nothing twice, and the late commit once
    holder.commit()
    second = _drain(follower, reader, reads=8)
    assert second == [held_event]
    # once everything is final the cursor passes all of it, and a quiet read reads nothing
    third = _drain(follower, reader, reads=8)
    assert third == []
    assert follower.cursor.after >= max(first)
    assert follower.read(reader) == [] and not follower.truncated
    # a client resuming from the cursor it had before the burst gets all of it
    resumed = EventFollower(start_cursor(None, "cursor"), batch=7)
    resumed.cursor = Cursor(0, follower.start.since)
    again = _drain(resumed, reader, reads=10)
    assert set(first) | set(second) <= set(again)


def test_an_event_that_commits_during_a_pass_of_pages_is_not_lost_to_the_time_bound(connect: Connect) -> None:
    reader, writer, holder = connect(), connect(autocommit=False), connect(autocommit=False)
    _queues(reader, "burst", "held")
    follower = EventFollower(start_cursor(None, "cursor"), batch=7)
    follower.read(reader)
    held = _enqueue(holder, "held")  # its event's `at` is its transaction's start, now
    time.sleep(1.5)  # older than the time bound's slack by the time the pass ends
    jobs = [_enqueue(writer, "burst") for _ in range(30)]
    writer.commit()
    page = follower.read(reader)  # the pass's first page: the held event is in flight
    assert follower.truncated and held not in {e["job_id"] for e in page}
    holder.commit()  # committed before the pass's later pages, below where they read
    got = [e["job_id"] for e in page] + [e["job_id"] for e in _drain_events(follower, reader, reads=8)]
    assert held not in got
    # the next pass starts at the cursor, with a time bound that must not pass the held event
    assert follower.cursor.since <= _at_of(reader, held), "the time bound passed an event committed during the pass"
    got += [e["job_id"] for e in _drain_events(follower, reader, reads=8)]
    assert sorted(got) == sorted([*jobs, held])


def _drain_events(follower: EventFollower, conn: psycopg.Connection[Any], reads: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(reads):
        got += follower.read(conn)
        if not follower.truncated:
            return got
    raise AssertionError(f"still truncated after {reads} reads")
