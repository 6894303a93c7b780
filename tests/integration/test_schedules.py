"""Periodic schedules in SQL: set_schedule & co., firing in reconcile exactly once per tick.

Time never passes by sleeping: a schedule's outage is made by moving its next_at back (as the
owner), and a time-compressed run widens the lookahead so that each reconcile round reaches
further ahead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.sql_api import one, rows, snapshot

pytestmark = pytest.mark.timeout(240)

Conn = psycopg.Connection[Any]
EVERY_SECOND = "* * * * * *"


def set_schedule(db: Conn, name: str, cron: str, job: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return one(db, "set_schedule", name=name, cron=cron, job=job or {"type": "tick.job"}, **kwargs)  # type: ignore[no-any-return]


def reconcile(db: Conn) -> dict[str, Any]:
    return one(db, "reconcile")  # type: ignore[no-any-return]


def set_setting(db: Conn, key: str, value: float) -> None:
    db.execute("UPDATE jobqueue.setting SET value = %s WHERE key = %s", [Jsonb(value), key])


def fired(db: Conn, name: str) -> list[dict[str, Any]]:
    """Every job a schedule enqueued (any state), oldest tick first."""
    return db.execute(
        "SELECT id, state::text, run_at, created_at, (metadata->>'tick')::timestamptz AS tick, payload, queue, "
        "priority, reason FROM jobqueue.jobs WHERE metadata->>'schedule' = %s ORDER BY tick, id",
        [name],
    ).fetchall()


def full_snapshot(db: Conn) -> dict[str, list[Any]]:
    out = snapshot(db)
    for t in ("schedule", "schedule_tick", "setting"):
        got = db.execute(sql.SQL("SELECT x::text AS r FROM jobqueue.{} x").format(sql.Identifier(t))).fetchall()
        out[t] = sorted(r["r"] for r in got)
    return out


def test_reconcile_enqueues_ticks_ahead_with_run_at_the_tick(db: Conn) -> None:
    s = set_schedule(db, "every-second", EVERY_SECOND, {"type": "tick.job", "payload": {"a": 1}, "queue": "ticks",
                                                         "priority": "high", "metadata": {"team": "ops"}})
    assert s["next_fire_at"] is not None and s["paused"] is False
    summary = reconcile(db)
    assert summary["schedules_due"] == 1 and summary["schedules_failed"] == 0
    jobs = fired(db, "every-second")
    assert summary["schedule_jobs_enqueued"] == len(jobs) >= 55  # lookahead 60 s of per-second ticks
    # each job runs at its tick; a tick already past when reconcile fired it (the current
    # second, by a few ms) runs at once: a past run_at means now (issue 12)
    assert [j["run_at"] for j in jobs] == [max(j["tick"], j["created_at"]) for j in jobs]
    assert sum(j["run_at"] == j["tick"] for j in jobs) >= len(jobs) - 1
    ticks = [j["tick"] for j in jobs]
    assert ticks == [ticks[0] + timedelta(seconds=i) for i in range(len(ticks))]
    now = db.execute("SELECT now() AS t").fetchone()["t"]  # type: ignore[index]
    assert ticks[0] >= now - timedelta(seconds=2) and ticks[-1] <= now + timedelta(seconds=62)
    assert all(j["payload"] == {"a": 1} and j["queue"] == "ticks" and j["priority"] == 8 for j in jobs)
    meta = db.execute("SELECT metadata FROM jobqueue.jobs WHERE id = %s", [jobs[0]["id"]]).fetchone()["metadata"]  # type: ignore[index]
    assert meta["team"] == "ops" and meta["schedule"] == "every-second"
    view = db.execute("SELECT * FROM jobqueue.schedules WHERE name = 'every-second'").fetchone()
    assert view is not None
    assert view["last_fire_at"] == ticks[-1] and view["last_job_id"] == jobs[-1]["id"]
    assert view["last_job_state"] == "pending" and view["next_fire_at"] == ticks[-1] + timedelta(seconds=1)
    # the next reconcile finds nothing new to fire
    again = reconcile(db)
    assert again["schedule_jobs_enqueued"] <= 2 and len(fired(db, "every-second")) == len(jobs) + again[
        "schedule_jobs_enqueued"]


def test_a_rolled_back_reconcile_fires_nothing_and_the_next_fires_once(connect: Callable[..., Conn], db: Conn) -> None:
    set_schedule(db, "rollback", EVERY_SECOND)
    tx = connect(autocommit=False)
    summary = tx.execute("SELECT jobqueue.reconcile() AS s").fetchone()["s"]  # type: ignore[index]
    assert summary["schedule_jobs_enqueued"] > 0
    tx.rollback()
    assert fired(db, "rollback") == []
    assert db.execute("SELECT count(*) AS n FROM jobqueue.schedule_tick").fetchone()["n"] == 0  # type: ignore[index]
    reconcile(db)
    ticks = [j["tick"] for j in fired(db, "rollback")]
    assert len(ticks) > 0 and len(ticks) == len(set(ticks))


def test_concurrent_reconcilers_fire_each_tick_exactly_once(connect: Callable[..., Conn], db: Conn) -> None:
    """8 reconcilers on their own connections, released together each round; the lookahead
    grows by 30 s a round (time-compressed: 20 rounds = 10 minutes of per-second ticks)."""
    names = [f"race-{i}" for i in range(5)]
    for name in names:
        set_schedule(db, name, EVERY_SECOND, missed="all", max_backfill=10000)
    conns = [connect() for _ in range(8)]
    errors: list[BaseException] = []
    rounds = 20
    lookahead = [60]

    def widen() -> None:  # runs once per round, when every reconciler has arrived
        lookahead[0] += 30
        set_setting(db, "schedule_lookahead_s", lookahead[0])

    barrier = threading.Barrier(len(conns), action=widen)

    def run(conn: Conn) -> None:
        try:
            for _ in range(rounds):
                barrier.wait()
                conn.execute("SELECT jobqueue.reconcile()")
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert not errors, errors
    horizon = db.execute("SELECT now() AS t").fetchone()["t"]  # type: ignore[index]
    for name in names:
        ticks = [j["tick"] for j in fired(db, name)]
        assert len(ticks) == len(set(ticks)), f"{name}: a tick fired twice"
        # no tick missed: one job per second from the first tick to the last
        assert ticks == [ticks[0] + timedelta(seconds=i) for i in range(len(ticks))], f"{name}: a tick is missing"
        assert ticks[-1] >= horizon + timedelta(seconds=60 + 30 * rounds - 30)
    assert db.execute("SELECT count(*) AS n FROM jobqueue.schedule_tick").fetchone()["n"] == sum(  # type: ignore[index]
        len(fired(db, n)) for n in names)


def outage(db: Conn, name: str, minutes: int) -> datetime:
    """As the owner: the schedule (every minute) last fired `minutes` ago; returns its next_at."""
    row = db.execute(
        "UPDATE jobqueue.schedule SET next_at = date_trunc('minute', now()) - make_interval(mins => %s) "
        "WHERE name = %s RETURNING next_at", [minutes, name]).fetchone()
    assert row is not None
    return row["next_at"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("missed", "max_backfill"), [("skip", 100), ("latest", 100), ("all", 100), ("all", 7)])
def test_missed_tick_policies(db: Conn, missed: str, max_backfill: int) -> None:
    set_schedule(db, "minutely", "* * * * *", missed=missed, max_backfill=max_backfill)
    first_missed = outage(db, "minutely", 90)
    before = db.execute("SELECT now() AS t").fetchone()["t"]  # type: ignore[index]
    summary = reconcile(db)
    assert summary["schedules_behind"] == 1
    late = before - timedelta(seconds=60)  # schedule_grace_s
    ticks = [j["tick"] for j in fired(db, "minutely")]
    missed_ticks = [t for t in ticks if t < late - timedelta(seconds=2)]
    on_time = [t for t in ticks if t >= late + timedelta(seconds=2)]
    assert len(missed_ticks) + len(on_time) >= len(ticks) - 1  # at most one tick within the 2 s of clock slack
    assert all(t.second == 0 for t in ticks) and len(ticks) == len(set(ticks))
    assert on_time and on_time[-1] > before  # the lookahead still fires ahead
    if missed == "skip":
        assert missed_ticks == []
    elif missed == "latest":
        assert len(missed_ticks) == 1 and missed_ticks[0] > late - timedelta(minutes=1, seconds=3)
    else:
        outage_ticks = [first_missed + timedelta(minutes=i) for i in range(100)]
        want = min(max_backfill, len([t for t in outage_ticks if t < late]))
        assert want - 1 <= len(missed_ticks) <= want + 1
        # the most recent ones, consecutive up to the on-time ticks
        assert missed_ticks == [missed_ticks[0] + timedelta(minutes=i) for i in range(len(missed_ticks))]
        assert missed_ticks[0] >= first_missed
        assert ticks == [ticks[0] + timedelta(minutes=i) for i in range(len(ticks))]


def test_changing_the_expression_replans_and_cancels_future_jobs(db: Conn) -> None:
    set_schedule(db, "replan", EVERY_SECOND)
    reconcile(db)
    before = fired(db, "replan")
    assert before
    s = set_schedule(db, "replan", "0 0 1 1 *", tz="Europe/Berlin")
    now = db.execute("SELECT now() AS t").fetchone()["t"]  # type: ignore[index]
    after = {j["id"]: j for j in fired(db, "replan")}
    for j in before:
        if j["tick"] > now:
            assert after[j["id"]]["state"] == "cancelled" and after[j["id"]]["reason"] == "schedule_changed"
    assert datetime.fromisoformat(s["next_fire_at"]) == one(db, "cron_next", "0 0 1 1 *", now, "Europe/Berlin")
    assert reconcile(db)["schedule_jobs_enqueued"] == 0
    # the same definition again changes nothing (a worker restarting re-declares it)
    s2 = set_schedule(db, "replan", "0 0 1 1 *", tz="Europe/Berlin")
    assert s2["next_fire_at"] == s["next_fire_at"]


def test_pause_stops_resume_restarts_remove_leaves_jobs(db: Conn) -> None:
    set_schedule(db, "p", EVERY_SECOND)
    reconcile(db)
    assert one(db, "pause_schedule", "p")["paused"] is True
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert all(j["state"] == "cancelled" for j in fired(db, "p") if j["tick"] > later)
    n = len(fired(db, "p"))
    assert reconcile(db)["schedule_jobs_enqueued"] == 0
    assert len(fired(db, "p")) == n
    view = db.execute("SELECT * FROM jobqueue.schedules WHERE name = 'p'").fetchone()
    assert view is not None and view["next_fire_at"] is None and view["paused_reason"] == "paused"
    resumed = one(db, "resume_schedule", "p")
    assert resumed["paused"] is False and resumed["next_fire_at"] is not None
    assert reconcile(db)["schedule_jobs_enqueued"] > 0
    total = len(fired(db, "p"))
    pending = [j for j in fired(db, "p") if j["state"] == "pending"]
    assert one(db, "remove_schedule", "p") is True
    assert one(db, "remove_schedule", "p") is False
    assert len(fired(db, "p")) == total and [j for j in fired(db, "p") if j["state"] == "pending"] == pending
    assert db.execute("SELECT count(*) AS n FROM jobqueue.schedule_tick").fetchone()["n"] == 0  # type: ignore[index]


def test_schedule_next_previews_the_planned_ticks(db: Conn) -> None:
    set_schedule(db, "nightly", "30 2 * * *", tz="Europe/Berlin")
    got = [r["schedule_next"] for r in rows(db, "schedule_next", "nightly", 3)]
    assert len(got) == 3
    want = [r["cron_next"] for r in rows(db, "cron_next", "30 2 * * *", None, "Europe/Berlin", 3)]
    assert got == want
    listed = rows(db, "list_schedules")
    assert [r["name"] for r in listed] == ["nightly"] and listed[0]["cron"] == "30 2 * * *"


def test_a_failing_schedule_does_not_stop_the_others(db: Conn) -> None:
    one(db, "configure_queue", "tiny", {"max_size": 1})
    set_schedule(db, "full", EVERY_SECOND, {"type": "x", "queue": "tiny"})
    set_schedule(db, "fine", "* * * * *")
    summary = reconcile(db)
    assert summary["schedules_failed"] == 1
    view = {r["name"]: r for r in db.execute("SELECT * FROM jobqueue.schedules").fetchall()}
    assert "full" in (view["full"]["last_error"] or "") or "tiny" in (view["full"]["last_error"] or "")
    assert fired(db, "full") == []  # the failed firing rolled back whole (no partial ticks)
    assert fired(db, "fine")


def test_sync_schedules_pauses_undeclared_and_resumes_redeclared(db: Conn) -> None:
    decl = [
        {"name": "a", "cron": "*/5 * * * *", "job": {"type": "a"}},
        {"name": "b", "cron": "@daily", "job": {"type": "b"}, "tz": "Europe/Berlin", "missed": "latest"},
    ]
    out = one(db, "sync_schedules", "app1", Jsonb(decl))
    assert out == {"upserted": ["a", "b"], "paused": [], "resumed": []}
    set_schedule(db, "manual", "@hourly")  # not declared by the app: sync never touches it
    out = one(db, "sync_schedules", "app1", Jsonb(decl[:1]))
    assert out == {"upserted": ["a"], "paused": ["b"], "resumed": []}
    view = {r["name"]: r for r in db.execute("SELECT * FROM jobqueue.schedules").fetchall()}
    assert view["b"]["paused"] and view["b"]["paused_reason"] == "undeclared" and not view["manual"]["paused"]
    assert view["a"]["declared_by"] == "app1" and view["manual"]["declared_by"] is None
    out = one(db, "sync_schedules", "app1", Jsonb(decl))
    assert out == {"upserted": ["a", "b"], "paused": [], "resumed": ["b"]}
    # an operator's pause is kept when the app declares the schedule again
    one(db, "pause_schedule", "a")
    one(db, "sync_schedules", "app1", Jsonb(decl))
    assert db.execute("SELECT paused FROM jobqueue.schedules WHERE name = 'a'").fetchone()["paused"] is True  # type: ignore[index]


BAD = [
    ({"cron": "*/5 * * 13 *"}, "cron", 'cron: month field "13" at position 9: 13 is not between 1 and 12'),
    ({"cron": "0 0 31 2 *"}, "cron", 'cron: day-of-month field "31" at position 5: day 31 never occurs in the months '
     "given (2)"),
    ({"cron": "0 0 * * MON#2"}, "cron", 'cron: day-of-week field "MON#2" at position 9: "MON#2" is not supported '
     "(no L, W or #)"),
    ({"tz": "Europe/Atlantis"}, "tz", 'tz: unknown time zone "Europe/Atlantis" (expected an IANA name such as UTC '
     "or Europe/Berlin)"),
    ({"max_backfill": -1}, "max_backfill", "max_backfill: must be an integer between 0 and 10000"),
    ({"missed": "some"}, "missed", "missed: must be one of skip, latest, all"),
    ({"name": ""}, "name", "name: must be a non-empty string"),
    ({"job": {"type": "x", "priority": 99}}, "job.priority",
     "job.priority: must be between 0 and 10 or one of low, normal, high, critical"),
    ({"job": {"type": ""}}, "job.type", "job.type: must be a non-empty string"),
    ({"job": {"payload": {}}}, "job.type", "job.type: must be a non-empty string"),
    ({"job": {"type": "x", "payload": [1]}}, "job.payload", "job.payload: must be a JSON object"),
    ({"job": {"type": "x", "queue": "no spaces"}}, "job.queue",
     "job.queue: must be 1-128 characters of A-Z a-z 0-9 _ . : -"),
    ({"job": {"type": "x", "run_at": "2030-01-01T00:00:00Z"}}, "job.run_at",
     "job.run_at: is set by the schedule: each job runs at its tick"),
    ({"job": {"type": "x", "depends_on": [1]}}, "job.depends_on", None),
    ({"job": {"type": "x", "max_attempts": 0}}, "job.max_attempts", None),
]


@pytest.mark.parametrize(("change", "field", "message"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_names_the_field_and_writes_nothing(
    db: Conn, change: dict[str, Any], field: str, message: str | None
) -> None:
    set_schedule(db, "existing", "*/5 * * * *")
    reconcile(db)
    args: dict[str, Any] = {"name": "existing", "cron": "0 * * * *", "job": {"type": "changed"}, **change}
    before = full_snapshot(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        one(db, "set_schedule", **args)
    assert info.value.diag.column_name == field
    if message is not None:
        assert info.value.diag.message_primary == message
    else:
        assert str(info.value.diag.message_primary).startswith(field + ": ")
    assert full_snapshot(db) == before


def test_unknown_names_and_bad_arguments_of_the_other_functions(db: Conn) -> None:
    before = full_snapshot(db)
    for fn in ("pause_schedule", "resume_schedule"):
        with pytest.raises(psycopg.errors.NoDataFound) as nf:
            one(db, fn, "nope")
        assert nf.value.diag.column_name == "name"
    with pytest.raises(psycopg.errors.NoDataFound):
        rows(db, "schedule_next", "nope")
    set_schedule(db, "x", "@hourly")
    before = full_snapshot(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        rows(db, "schedule_next", "x", 0)
    assert info.value.diag.column_name == "n"
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        one(db, "sync_schedules", "app", Jsonb([{"name": "ok", "cron": "@daily", "job": {"type": "t"}},
                                                {"name": "bad", "cron": "@daily", "job": {"type": "t"},
                                                 "missed": "never"}]))
    assert info.value.diag.column_name == "schedules[1].missed"
    assert full_snapshot(db) == before  # all or nothing: "ok" was not created either


def test_only_admins_manage_schedules_and_workers_sync(
    connect: Callable[..., Conn], db: Conn, login_role: Callable[[str], str]
) -> None:
    producer = connect(user=login_role("jobqueue_producer"))
    worker = connect(user=login_role("jobqueue_worker"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        one(producer, "set_schedule", name="x", cron="@daily", job={"type": "t"})
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        one(worker, "set_schedule", name="x", cron="@daily", job={"type": "t"})
    one(worker, "sync_schedules", "app", Jsonb([{"name": "x", "cron": "* * * * * *", "job": {"type": "t"}}]))
    assert one(worker, "reconcile")["schedule_jobs_enqueued"] > 0
    assert [r["name"] for r in rows(worker, "list_schedules")] == ["x"]


def test_a_new_template_refires_the_waiting_future_ticks_with_it(db: Conn) -> None:
    set_schedule(db, "tmpl", EVERY_SECOND, {"type": "old"})
    reconcile(db)
    set_schedule(db, "tmpl", EVERY_SECOND, {"type": "new"})
    changed_at = db.execute("SELECT now() AS t").fetchone()["t"]  # type: ignore[index]
    reconcile(db)
    jobs = db.execute(
        "SELECT type, state::text, (metadata->>'tick')::timestamptz AS tick FROM jobqueue.jobs "
        "WHERE metadata->>'schedule' = 'tmpl'").fetchall()
    waiting = sorted(j["tick"] for j in jobs if j["state"] == "pending")
    # ticks already due when it changed keep their job; every later tick has the new template
    assert waiting and all(j["type"] == "new" for j in jobs if j["state"] == "pending" and j["tick"] > changed_at)
    assert all(j["type"] == "old" for j in jobs if j["state"] == "cancelled")
    assert waiting == [waiting[0] + timedelta(seconds=i) for i in range(len(waiting))]  # no gap left behind
