"""The queue core through its public SQL API, on a real PostgreSQL (no mocks, no sleeps).

Time is moved by editing rows as the owner (a lease or a run time into the past), never by
waiting. Test ids from RELIABILITY.md 4.3 are named in the docstrings (FENCE-01, RETRY-02...).
Concurrency, plan, security and model-based tests live in test_sql_concurrency.py,
test_sql_security.py and test_sql_model.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from tests.support.plans import explained, nodes
from tests.support.sql_api import (
    claim,
    claim_one,
    counts,
    enqueue,
    events,
    expire_lease,
    hot_row,
    job,
    make_due,
    one,
    rows,
    snapshot,
    transitions,
)

#: FENCE-01's randomized interleavings: 200 in the PR tier, 1,000 in `make nightly`
#: (FENCE_RUNS=1000); FENCE_SEED picks another sequence of schedules.
FENCE_RUNS = int(os.environ.get("FENCE_RUNS", "200"))
FENCE_SEED = int(os.environ.get("FENCE_SEED", "1234"))

pytestmark = pytest.mark.timeout(max(300, FENCE_RUNS // 2))

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]

#: No back-off at all: retried jobs are due at once.
NO_DELAY = {"strategy": "fixed", "initial_delay": 0, "jitter": False}


def state(db: Conn, job_id: int) -> str:
    return str(job(db, job_id)["state"])


def fail_until_dead(db: Conn, job_id: int, attempts: int, error_class: str = "transient") -> list[int]:
    """Claim and fail the job `attempts` times (due at once each time); returns the tokens."""
    tokens = []
    for n in range(attempts):
        make_due(db, job_id)
        leased = claim_one(db)
        assert leased["id"] == job_id and leased["attempt"] == n + 1
        tokens.append(leased["token"])
        one(db, "fail", job_id, leased["token"], f"boom {n + 1}", error_class)
    return tokens


def backoff(db: Conn, job_id: int) -> timedelta:
    """How long after its last failure the job runs again (run_at - the failure's now())."""
    row = db.execute("SELECT run_at - (errors->-1->>'at')::timestamptz AS d FROM jobqueue.job WHERE id = %s",
                     [job_id]).fetchone()
    return row["d"]


# -- enqueue -----------------------------------------------------------------------------------


def test_schema_version_and_priority_names(db: Conn) -> None:
    assert one(db, "schema_version") == 7
    assert [one(db, "priority", name) for name in ("low", "normal", "high", "critical", "HIGH", "7")] == [
        0, 5, 8, 10, 8, 7]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        one(db, "priority", "urgent")
    assert err.value.diag.column_name == "priority"


def test_enqueue_defaults(db: Conn) -> None:
    job_id = enqueue(db, "email.send")
    row = job(db, job_id)
    assert row["state"] == "pending" and row["queue"] == "default" and row["payload"] == {}
    assert row["priority"] == 5 and row["attempt"] == 0 and row["max_attempts"] == 25
    assert row["created_by"] == "postgres" or row["created_by"] == db.info.user
    assert row["errors"] == [] and row["token"] is None
    # the queue is registered on first use
    assert db.execute("SELECT name FROM jobqueue.queues").fetchall() == [{"name": "default"}]
    assert transitions(db, job_id) == [(None, "pending")]


def test_null_arguments_mean_the_defaults(db: Conn) -> None:
    """NULL (and JSON null in enqueue_many) means "not given", except for the payload, which
    must be an object: it is refused by name (test_sql_limits.py), and left out it is {}."""
    job_id = enqueue(db, "t", queue=None, priority=None)
    row = job(db, job_id)
    assert (row["payload"], row["queue"], row["priority"]) == ({}, "default", 5)
    [many] = rows(db, "enqueue_many", Jsonb([{"type": "t", "queue": None, "delay": None}]))
    assert job(db, many["enqueue_many"])["queue"] == "default"


def test_enqueue_every_option(db: Conn) -> None:
    parent = enqueue(db, "parent")
    run_at = datetime.now(UTC) + timedelta(minutes=10)
    job_id = enqueue(
        db, "email.send", payload={"to": "a@b"}, queue="mail", priority="high", run_at=run_at, max_attempts=7,
        retry_policy={"strategy": "linear", "initial_delay": 2}, unique_key="welcome:1",
        expires_at=run_at + timedelta(hours=1), tenant_id="acme", user_id="u-1", tags=["a", "b"],
        metadata={"trace": "t"}, depends_on=[parent], timeout=timedelta(seconds=90),
        visibility_timeout=timedelta(seconds=120))
    row = job(db, job_id)
    assert (row["queue"], row["type"], row["payload"], row["priority"]) == ("mail", "email.send", {"to": "a@b"}, 8)
    assert abs((row["run_at"] - run_at).total_seconds()) < 0.001
    assert row["max_attempts"] == 7 and row["retry_policy"] == {"strategy": "linear", "initial_delay": 2}
    assert row["unique_key"] == "welcome:1" and row["tenant_id"] == "acme" and row["user_id"] == "u-1"
    assert row["tags"] == ["a", "b"] and row["metadata"] == {"trace": "t"} and row["depends_on"] == [parent]
    assert row["timeout"] == timedelta(seconds=90) and row["visibility_timeout"] == timedelta(seconds=120)
    assert row["waiting_on"] == 1


@pytest.mark.parametrize(("given_priority", "stored"), [
    (0, 0), (10, 10), (8, 8), ("low", 0), ("normal", 5), ("high", 8), ("critical", 10), ("Critical", 10), (None, 5)])
def test_enqueue_priority_numbers_and_names(db: Conn, given_priority: Any, stored: int) -> None:
    assert job(db, enqueue(db, priority=given_priority))["priority"] == stored


def test_enqueue_delay_and_run_at(db: Conn) -> None:
    delayed = enqueue(db, delay=timedelta(minutes=5))
    at = job(db, delayed)["run_at"]
    now = db.execute("SELECT now() AS t").fetchone()["t"]
    assert timedelta(minutes=4) < at - now <= timedelta(minutes=5)
    assert claim(db) == []
    past = enqueue(db, run_at=datetime(2000, 1, 1, tzinfo=UTC))  # a past run time: runnable now
    assert claim_one(db)["id"] == past


def test_unique_key_duplicate_returns_the_live_job(db: Conn) -> None:
    first = enqueue(db, payload={"n": 1}, unique_key="k")
    assert enqueue(db, payload={"n": 2}, unique_key="k") == first
    assert db.execute("SELECT count(*) AS n FROM jobqueue.jobs").fetchone()["n"] == 1
    # once finished, the key is free again
    leased = claim_one(db)
    assert one(db, "complete", first, leased["token"]) == "completed"
    second = enqueue(db, unique_key="k")
    assert second != first and state(db, second) == "pending"


def test_expires_at_dead_letters_expired(db: Conn) -> None:
    job_id = enqueue(db, expires_at=datetime.now(UTC) + timedelta(hours=1))
    db.execute("UPDATE jobqueue.job SET expires_at = now() - interval '1 second' WHERE id = %s", [job_id])
    assert claim(db) == []  # not started by its expiry: never claimed
    summary = one(db, "reconcile")
    assert summary["expired"] == 1
    row = job(db, job_id)
    assert row["state"] == "dead_letter" and row["reason"] == "expired"
    assert transitions(db, job_id)[-1] == ("pending", "dead_letter")


def test_depends_on_runs_after_the_dependency(db: Conn) -> None:
    a = enqueue(db, "a")
    b = enqueue(db, "b")
    c = enqueue(db, "c", depends_on=[a, b])
    assert [r["id"] for r in claim(db, batch=10)] == [a, b]  # c waits
    leased = {r["id"]: r["token"] for r in db.execute(
        "SELECT id, token FROM jobqueue.job WHERE state = 'processing'").fetchall()}
    assert one(db, "complete", a, leased[a]) == "completed"
    assert claim(db) == [] and hot_row(db, c)["waiting_on"] == 1
    assert one(db, "complete", b, leased[b]) == "completed"
    assert claim_one(db)["id"] == c
    # depending on an already completed job is no wait at all
    d = enqueue(db, "d", depends_on=[a])
    assert claim_one(db)["id"] == d


def test_dependency_failure_cancels_dependents_recursively(db: Conn) -> None:
    a = enqueue(db, "a", max_attempts=1)
    b = enqueue(db, "b", depends_on=[a])
    c = enqueue(db, "c", depends_on=[b])
    leased = claim_one(db)
    assert one(db, "fail", a, leased["token"], "no", "permanent") == "dead_letter"
    for dependent in (b, c):
        row = job(db, dependent)
        assert row["state"] == "cancelled" and row["reason"] == "dependency_failed"
    # born after the failure: cancelled at once
    d = enqueue(db, "d", depends_on=[a])
    assert job(db, d)["state"] == "cancelled" and job(db, d)["reason"] == "dependency_failed"
    # a cancelled dependency fails its dependents too
    e = enqueue(db, "e", delay=timedelta(hours=1))
    f = enqueue(db, "f", depends_on=[e])
    assert one(db, "cancel", e) == "cancelled"
    assert job(db, f)["reason"] == "dependency_failed"


def test_depends_on_unknown_id(db: Conn) -> None:
    before = counts(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        enqueue(db, depends_on=[10**12])
    assert err.value.diag.column_name == "depends_on" and "unknown job id" in str(err.value)
    assert counts(db) == before


def test_enqueue_many_in_order_and_all_or_nothing(db: Conn) -> None:
    ids = list(rows(db, "enqueue_many", Jsonb([
        {"type": "a"}, {"type": "b", "queue": "q2", "priority": "critical"}, {"type": "c", "unique_key": "u"},
        {"type": "d", "unique_key": "u"}, {"type": "e", "delay": 60, "payload": {"x": 1}}])))
    ids = [r["enqueue_many"] for r in ids]
    assert len(ids) == 5 and ids[3] == ids[2]  # same unique key in one batch: one job
    assert [job(db, i)["type"] for i in ids] == ["a", "b", "c", "c", "e"]
    assert job(db, ids[1])["priority"] == 10 and job(db, ids[4])["payload"] == {"x": 1}
    before = snapshot(db)
    bad = [{"type": "ok"}] * 3 + [{"type": "ok", "priority": 99}] + [{"type": "ok"}]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        rows(db, "enqueue_many", Jsonb(bad))
    assert str(err.value.diag.message_primary).startswith("jobs[3].priority: ")
    assert err.value.diag.column_name == "priority"
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        rows(db, "enqueue_many", Jsonb([{"type": "ok"}, {"type": "ok", "colour": "red"}]))
    assert str(err.value.diag.message_primary).startswith('jobs[1]: unknown key "colour"')
    for empty in ([], {}, [1]):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            rows(db, "enqueue_many", Jsonb(empty))
    assert snapshot(db) == before


def test_enqueue_many_bulk(db: Conn) -> None:
    jobs = [{"type": "bulk", "payload": {"n": i}, "priority": i % 11} for i in range(20_000)]
    ids = [r["enqueue_many"] for r in rows(db, "enqueue_many", Jsonb(jobs))]
    assert len(ids) == 20_000 and ids == sorted(ids)
    assert job(db, ids[123])["payload"] == {"n": 123} and job(db, ids[123])["priority"] == 123 % 11
    created = db.execute("SELECT count(*) AS n FROM jobqueue.job_event WHERE to_state = 'pending'").fetchone()
    assert created["n"] == 20_000


# -- claim -------------------------------------------------------------------------------------


def test_claim_order_priority_then_run_time_then_id(db: Conn) -> None:
    ids = {name: enqueue(db, name, priority=p) for name, p in [("a", 1), ("b", 10), ("c", 5), ("d", 10), ("e", 5)]}
    # e becomes the older of the two priority-5 jobs
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '1 hour' WHERE id = %s", [ids["e"]])
    got = claim(db, batch=3)
    assert [r["id"] for r in got] == [ids["b"], ids["d"], ids["e"]]
    assert [r["id"] for r in claim(db, batch=10)] == [ids["c"], ids["a"]]


def test_claim_row_and_lease(db: Conn) -> None:
    job_id = enqueue(db, "t", payload={"p": 1}, metadata={"m": 1}, timeout=timedelta(seconds=90), max_attempts=3)
    leased = claim_one(db, worker_id="w1")
    assert (leased["id"], leased["type"], leased["payload"], leased["metadata"]) == (job_id, "t", {"p": 1}, {"m": 1})
    assert leased["attempt"] == 1 and leased["max_attempts"] == 3 and leased["timeout"] == timedelta(seconds=90)
    assert leased["lease_duration"] == timedelta(seconds=30)  # the default visibility timeout
    row = hot_row(db, job_id)
    assert row["state"] == "processing" and row["token"] == leased["token"] and row["worker_id"] == "w1"
    assert row["lease_expires_at"] == leased["lease_expires_at"] == row["claimed_at"] + timedelta(seconds=30)


def test_visibility_timeout_precedence(db: Conn) -> None:
    """The claim's argument, else the job's own, else the queue's, else 30 s."""
    one(db, "configure_queue", "vq", {"visibility_timeout": 300})
    plain = enqueue(db, queue="vq")
    own = enqueue(db, queue="vq", visibility_timeout=timedelta(seconds=45))
    other = enqueue(db, queue="other")
    by_id = {r["id"]: r["lease_duration"] for r in claim(db, ["vq"], batch=10)}
    assert by_id == {plain: timedelta(seconds=300), own: timedelta(seconds=45)}
    assert claim_one(db, ["other"])["lease_duration"] == timedelta(seconds=30)
    make_due(db, other)
    again = enqueue(db, queue="vq", visibility_timeout=timedelta(seconds=45))
    assert claim_one(db, ["vq"], visibility_timeout=timedelta(seconds=7))["lease_duration"] == timedelta(seconds=7)
    assert again


def test_claim_eligibility(db: Conn) -> None:
    delayed = enqueue(db, "t", delay=timedelta(minutes=1))
    parent = enqueue(db, "parent", queue="other")
    blocked = enqueue(db, "t", depends_on=[parent])
    paused = enqueue(db, "t", queue="paused")
    one(db, "pause_queue", "paused")
    typed = enqueue(db, "special")
    plain = enqueue(db, "t")
    assert [r["id"] for r in claim(db, ["default"], batch=10, types=["special"])] == [typed]
    assert [r["id"] for r in claim(db, ["default", "paused"], batch=10)] == [plain]
    assert claim(db, ["paused"]) == []
    one(db, "resume_queue", "paused")
    assert claim_one(db, ["paused"])["id"] == paused
    make_due(db, delayed)
    assert claim_one(db)["id"] == delayed
    assert claim(db) == [] and state(db, blocked) == "pending"


def test_claim_from_several_queues_merges_the_order(db: Conn) -> None:
    low = enqueue(db, queue="q1", priority=1)
    high = enqueue(db, queue="q2", priority=9)
    mid = enqueue(db, queue="q3", priority=5)
    got = claim(db, ["q1", "q2", "q3", "q1"], batch=2)
    assert [r["id"] for r in got] == [high, mid]
    assert [r["id"] for r in claim(db, ["q1", "q2", "q3"], batch=5)] == [low]


def test_each_claim_takes_a_new_higher_token_and_counts_an_attempt(db: Conn) -> None:
    job_id = enqueue(db, retry_policy=NO_DELAY, max_attempts=5)
    tokens = fail_until_dead(db, job_id, 3)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert job(db, job_id)["attempt"] == 3


# -- fencing -----------------------------------------------------------------------------------


def view(db: Conn, job_id: int) -> tuple[str, int, int]:
    """Everything a stale call could change: the job row, its events, its logs."""
    row = db.execute("SELECT x::text AS r FROM jobqueue.jobs x WHERE id = %s", [job_id]).fetchone()["r"]
    n_events = db.execute("SELECT count(*) AS n FROM jobqueue.job_event WHERE job_id = %s", [job_id]).fetchone()["n"]
    n_logs = db.execute("SELECT count(*) AS n FROM jobqueue.job_log WHERE job_id = %s", [job_id]).fetchone()["n"]
    return row, n_events, n_logs


STALE_CALLS: list[tuple[str, Callable[[Conn, int, int], Any]]] = [
    ("complete", lambda c, i, t: one(c, "complete", i, t, {"stale": True})),
    ("complete_many", lambda c, i, t: rows(c, "complete_many", [i], [t])[0]["status"]),
    ("fail", lambda c, i, t: one(c, "fail", i, t, "stale", "transient")),
    ("fail_permanent", lambda c, i, t: one(c, "fail", i, t, "stale", "permanent")),
    ("heartbeat", lambda c, i, t: rows(c, "heartbeat", i, t, timedelta(hours=1))[0]["status"]),
    ("snooze", lambda c, i, t: one(c, "snooze", i, t, timedelta(0))),
    ("release", lambda c, i, t: one(c, "release", i, t)),
    ("add_log", lambda c, i, t: one(c, "add_log", i, t, "stale line")),
    ("set_progress", lambda c, i, t: one(c, "set_progress", i, t, 50)),
]


def lease_then_steal(db: Conn, queue: str = "default") -> tuple[int, int, int]:
    """A claims (t1); its lease expires; reconcile takes it back; B claims (t2)."""
    job_id = enqueue(db, queue=queue, retry_policy=NO_DELAY, max_attempts=50)
    t1 = claim_one(db, [queue], worker_id="A")["token"]
    expire_lease(db, job_id)
    assert one(db, "reconcile")["leases_retried"] == 1
    b = claim_one(db, [queue], worker_id="B")
    assert b["id"] == job_id and b["token"] > t1
    return job_id, t1, b["token"]


@pytest.mark.parametrize("call", STALE_CALLS, ids=[name for name, _ in STALE_CALLS])
def test_stale_token_after_expiry_and_reclaim_changes_nothing(db: Conn, call: tuple[str, Any]) -> None:
    """FENCE-01: every call with the old token answers lease_lost and leaves the job as it was."""
    job_id, t1, t2 = lease_then_steal(db)
    before = view(db, job_id)
    assert call[1](db, job_id, t1) == "lease_lost"
    assert view(db, job_id) == before
    assert call[1](db, job_id, 10**15) == "lease_lost"  # a token never issued
    assert view(db, job_id) == before
    assert one(db, "complete", job_id, t2) == "completed"  # the new holder is unaffected
    assert state(db, job_id) == "completed"


def test_stale_tokens_in_randomized_interleavings(db: Conn) -> None:
    """FENCE-01: FENCE_RUNS (200; nightly 1,000) random interleavings of a stale holder A with the
    current holder B; every stale write refused and changing nothing."""
    rng = random.Random(FENCE_SEED)
    finals = ["complete", "fail", "snooze", "release", "fail_permanent"]
    calls = dict(STALE_CALLS)
    refused = 0
    for n in range(FENCE_RUNS):
        job_id, t1, t2 = lease_then_steal(db, f"q{n}")
        a_steps = rng.sample(list(calls), k=rng.randint(1, len(calls)))
        b_steps = [*["heartbeat", "add_log", "set_progress"][: rng.randint(0, 3)], rng.choice(finals)]
        schedule = [("A", s) for s in a_steps] + [("B", s) for s in b_steps]
        rng.shuffle(schedule)
        # B's final acknowledgement stays its last step
        schedule = [x for x in schedule if x != ("B", b_steps[-1])] + [("B", b_steps[-1])]
        for who, step in schedule:
            if who == "A":
                before = view(db, job_id)
                assert calls[step](db, job_id, t1) == "lease_lost", (step, schedule)
                assert view(db, job_id) == before, (step, schedule)
                refused += 1
            else:
                status = calls[step](db, job_id, t2)
                assert status in {"ok", "completed", "retrying", "snoozed", "released", "dead_letter"}, (step, status)
        # B's token was accepted exactly once for its final transition
        final = [e for e in events(db, job_id) if e["token"] == t2 and e["from_state"] == "processing"]
        assert len(final) == 1, (schedule, final)
    print(f"FENCE-01: {FENCE_RUNS} interleavings (seed {FENCE_SEED}), {refused} stale calls, all refused")


def test_complete_twice_with_the_same_token(db: Conn) -> None:
    """FENCE-03: a repeated ack answers already_completed; one completion event."""
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    assert one(db, "complete", job_id, token, {"r": 1}) == "completed"
    assert one(db, "complete", job_id, token, {"r": 2}) == "already_completed"
    assert rows(db, "complete_many", [job_id], [token]) == [{"id": job_id, "status": "already_completed"}]
    assert one(db, "complete", job_id, token + 1) == "lease_lost"
    assert job(db, job_id)["output"] == {"r": 1}
    assert [e for e in transitions(db, job_id) if e[1] == "completed"] == [("processing", "completed")]


def test_complete_many_mixed_batch(db: Conn) -> None:
    a, b, c = (enqueue(db, str(i)) for i in range(3))
    leased = {r["id"]: r["token"] for r in claim(db, batch=3)}
    assert one(db, "complete", a, leased[a]) == "completed"
    got = rows(db, "complete_many", [a, b, c, c], [leased[a], leased[b], leased[c] + 99, leased[c]],
               [Jsonb({"a": 1}), Jsonb({"b": 1}), None, None])
    assert got == [{"id": a, "status": "already_completed"}, {"id": b, "status": "completed"},
                   {"id": c, "status": "lease_lost"}, {"id": c, "status": "completed"}]
    assert job(db, b)["output"] == {"b": 1}
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        rows(db, "complete_many", [a, b], [leased[a]])
    assert err.value.diag.column_name == "tokens"


def _waiting_on_lock(db: Conn, pid: int) -> bool:
    row = db.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0 AS blocked", [pid]).fetchone()
    return bool(row["blocked"])


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(100_000):  # each check is a query: no sleep needed
        if predicate():
            return
    raise AssertionError(f"timed out waiting for {what}")


def test_reconcile_skips_a_job_being_completed(db: Conn, connect: Connect) -> None:
    """FENCE-04 (river#1302): the worker completes while reconcile runs: completed stays completed."""
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    expire_lease(db, job_id)  # the lease ran out, but the worker is still finishing
    worker = connect(autocommit=False)
    assert one(worker, "complete", job_id, token) == "completed"  # not committed: holds the row
    summary = one(db, "reconcile")  # SKIP LOCKED: does not wait, does not touch it
    assert summary["expired_leases"] == 0
    worker.commit()
    assert one(db, "reconcile")["expired_leases"] == 0
    assert state(db, job_id) == "completed"
    assert transitions(db, job_id) == [(None, "pending"), ("pending", "processing"), ("processing", "completed")]


def test_completion_waiting_behind_reconcile_gets_lease_lost(db: Conn, connect: Connect) -> None:
    """FENCE-04: reconcile took the job first; the completion waits on the row lock, then loses."""
    job_id = enqueue(db, retry_policy=NO_DELAY)
    token = claim_one(db)["token"]
    expire_lease(db, job_id)
    maintenance = connect(autocommit=False)
    assert one(maintenance, "reconcile")["leases_retried"] == 1  # uncommitted: holds the row
    worker = connect()
    result: dict[str, Any] = {}

    def ack() -> None:
        result["status"] = one(worker, "complete", job_id, token)

    thread = threading.Thread(target=ack)
    thread.start()
    _wait_until(lambda: _waiting_on_lock(db, worker.info.backend_pid), "the completion to wait on the row lock")
    maintenance.commit()
    thread.join(30)
    assert result["status"] == "lease_lost"
    assert state(db, job_id) == "retrying"
    row = job(db, job_id)
    assert row["errors"][-1]["error_class"] == "timeout" and row["errors"][-1]["token"] == token


def test_reconcile_never_waits_for_a_locked_job(db: Conn, connect: Connect) -> None:
    """FENCE-04: a job locked by another transaction (a completion in flight) is skipped, not waited for."""
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    expire_lease(db, job_id)
    holder = connect(autocommit=False)
    holder.execute("SELECT 1 FROM jobqueue.job WHERE id = %s FOR UPDATE", [job_id])
    assert one(db, "reconcile")["expired_leases"] == 0
    assert one(holder, "complete", job_id, token) == "completed"
    holder.commit()
    assert state(db, job_id) == "completed"


def test_late_completion_before_any_reclaim_is_accepted(db: Conn) -> None:
    """The lease ran out but nobody took the job over: the holder's ack still counts (liveness)."""
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    expire_lease(db, job_id)
    assert one(db, "complete", job_id, token) == "completed"


def test_token_grows_across_dead_letter_and_redrive(db: Conn) -> None:
    """FENCE-05: DLQ -> redrive -> claim: a new token above every earlier one; old tokens refused."""
    job_id = enqueue(db, max_attempts=2, retry_policy=NO_DELAY)
    old = fail_until_dead(db, job_id, 2)
    assert state(db, job_id) == "dead_letter"
    assert [r["redrive"] for r in rows(db, "redrive", {"ids": [job_id]})] == [job_id]
    row = job(db, job_id)
    assert row["state"] == "pending" and row["attempt"] == 0 and len(row["errors"]) == 2
    leased = claim_one(db)
    assert leased["id"] == job_id and leased["token"] > max(old) and leased["attempt"] == 1
    for token, first_answer in zip(old, ["retrying", "dead_letter"], strict=True):
        assert one(db, "complete", job_id, token) == "lease_lost"
        assert rows(db, "heartbeat", job_id, token)[0]["status"] == "lease_lost"
        # a repeated fail answers what that token's fail was answered, and changes nothing
        assert one(db, "fail", job_id, token, "x", "permanent") == first_answer
    assert state(db, job_id) == "processing"
    assert one(db, "complete", job_id, leased["token"]) == "completed"


def test_heartbeat_extends_renews_and_is_capped(db: Conn) -> None:
    """FENCE-06: heartbeat renews from now; total lease capped at claimed_at + 12 h; stale refused."""
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    [hb] = rows(db, "heartbeat", job_id, token, timedelta(minutes=10))
    now = db.execute("SELECT now() AS t").fetchone()["t"]
    assert hb["status"] == "ok" and hb["cancel_requested"] is False
    assert timedelta(minutes=9) < hb["lease_expires_at"] - now <= timedelta(minutes=10)
    expire_lease(db, job_id)
    assert rows(db, "heartbeat", job_id, token)[0]["status"] == "ok"  # renewed before anyone took it
    assert one(db, "reconcile")["expired_leases"] == 0  # the renewed lease holds
    db.execute("UPDATE jobqueue.job SET claimed_at = now() - interval '11 hours 50 minutes' WHERE id = %s", [job_id])
    [capped] = rows(db, "heartbeat", job_id, token, timedelta(hours=1))
    claimed_at = hot_row(db, job_id)["claimed_at"]
    assert capped["lease_expires_at"] == claimed_at + timedelta(hours=12)
    before = view(db, job_id)
    assert rows(db, "heartbeat", job_id, token + 1, timedelta(hours=1))[0]["status"] == "lease_lost"
    assert view(db, job_id) == before
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        rows(db, "heartbeat", job_id, token, timedelta(hours=13))
    assert err.value.diag.column_name == "extend_by"


# -- retries -----------------------------------------------------------------------------------


def reference_delay(policy: dict[str, Any], n: int, error_class: str, u: float) -> float | None:
    """The formula documented on jobqueue.retry_delay, written again in Python."""
    if error_class in ("validation", "business", "permanent", "cancelled"):
        return None
    strategy = policy.get("strategy", "exponential")
    initial = float(policy.get("initial_delay", 1))
    if strategy == "exponential":
        m = float(policy.get("multiplier", 2))
        try:
            base = initial * m ** (n - 1)
        except OverflowError:
            base = float("inf") if initial > 0 else 0.0
    elif strategy == "linear":
        base = initial + float(policy.get("increment", initial)) * (n - 1)
    elif strategy == "fixed":
        base = initial
    else:
        delays = policy["delays"]
        base = float(delays[min(n, len(delays)) - 1])
    if error_class == "timeout":
        base *= 2
    cap = float(policy.get("max_delay", 3600 if strategy in ("exponential", "linear") else 2592000))
    jitter = policy.get("jitter", True)
    r = 0.1 if jitter is True else 0.0 if jitter is False else float(jitter)
    b = min(base, cap)
    return min(b * (1 + r * (2 * u - 1)), cap), b, r, cap  # type: ignore[return-value]


seconds = st.integers(0, 7200) | st.floats(0, 7200, allow_nan=False).map(lambda x: round(x, 3))
policies = st.one_of(
    st.fixed_dictionaries({"strategy": st.just("exponential")},
                          optional={"initial_delay": seconds, "multiplier": st.floats(1, 10).map(lambda x: round(x, 2)),
                                    "max_delay": seconds, "jitter": st.booleans() | st.floats(0, 1)}),
    st.fixed_dictionaries({"strategy": st.just("linear")},
                          optional={"initial_delay": seconds, "increment": seconds, "max_delay": seconds,
                                    "jitter": st.booleans() | st.floats(0, 1)}),
    st.fixed_dictionaries({"strategy": st.just("fixed")},
                          optional={"initial_delay": seconds, "max_delay": seconds, "jitter": st.booleans()}),
    st.fixed_dictionaries({"strategy": st.just("custom"), "delays": st.lists(seconds, min_size=1, max_size=6)},
                          optional={"max_delay": seconds, "jitter": st.booleans() | st.floats(0, 1)}),
    st.just({}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=policies, attempt=st.integers(1, 2000), error_class=st.sampled_from(["transient", "timeout", "system"]),
       u=st.floats(0, 1, exclude_max=True))
def test_retry_delay_bounds(db: Conn, policy: dict[str, Any], attempt: int, error_class: str, u: float) -> None:
    """RETRY-01: the SQL schedule follows the documented formula: bounds, cap, jitter band, determinism."""
    got = one(db, "retry_delay", Jsonb(policy), attempt, error_class, u).total_seconds()
    again = one(db, "retry_delay", Jsonb(policy), attempt, error_class, u).total_seconds()
    assert got == again  # deterministic for a given jitter_unit
    expected, b, r, cap = reference_delay(policy, attempt, error_class, u)  # type: ignore[misc]
    assert got <= cap + 1e-6  # never above the cap
    assert b * (1 - r) - 1e-6 <= got <= min(cap, b * (1 + r)) + 1e-6  # the jitter band
    assert abs(got - expected) <= 1e-6 + 1e-9 * expected  # microsecond rounding only


def test_retry_delay_examples_and_errors(db: Conn) -> None:
    def delay(policy: dict[str, Any] | None, n: int, cls: str = "transient", u: float | None = None) -> Any:
        return one(db, "retry_delay", Jsonb(policy) if policy is not None else None, n, cls, u)

    assert [delay(None, n).total_seconds() for n in (1, 2, 3, 13)] == [1, 2, 4, 3600]  # u NULL: no offset
    assert delay({"strategy": "custom", "delays": [60, 300, 900]}, 7).total_seconds() == 900  # the last repeats
    assert delay({"strategy": "fixed", "initial_delay": 10, "jitter": False}, 3, "timeout").total_seconds() == 20
    assert delay(None, 1, "permanent") is None and delay(None, 1, "cancelled") is None
    # a ratio too small to matter is 0, not a float underflow error (hypothesis found 5e-324)
    assert delay({"strategy": "fixed", "initial_delay": 10, "jitter": 5e-324}, 1, u=0.25).total_seconds() == 10
    for args, field in [((None, 0), "attempt"), ((None, 1, "bogus"), "error_class"),
                        (({"strategy": "sideways"}, 1), "retry_policy"), ((None, 1, "transient", 1.0), "jitter_unit")]:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
            delay(*args)
        assert err.value.diag.column_name == field


def test_dead_letter_after_max_attempts(db: Conn) -> None:
    """RETRY-02: fail 5x with max_attempts=5: a dead letter with 5 errors, not claimable, DLQ depth 1."""
    job_id = enqueue(db, "flaky", payload={"in": 1}, max_attempts=5, retry_policy=NO_DELAY)
    tokens = fail_until_dead(db, job_id, 5)
    letter = db.execute("SELECT * FROM jobqueue.dead_letters WHERE id = %s", [job_id]).fetchone()
    assert letter["state"] == "dead_letter" and letter["reason"] == "max_retries_exceeded"
    assert letter["payload"] == {"in": 1} and letter["attempt"] == 5 and letter["last_error"] == "boom 5"
    assert [e["attempt"] for e in letter["errors"]] == [1, 2, 3, 4, 5]
    assert [e["token"] for e in letter["errors"]] == tokens
    assert {e["error_class"] for e in letter["errors"]} == {"transient"}
    assert job(db, job_id)["errors"] == letter["errors"]
    make_due(db, job_id)
    assert claim(db) == []
    stats = {r["queue"]: r for r in rows(db, "queue_stats")}
    assert stats["default"]["dead_letters"] == 1
    assert transitions(db, job_id)[-1] == ("processing", "dead_letter")


@pytest.mark.parametrize("error_class", ["permanent", "validation", "business"])
def test_permanent_classes_dead_letter_at_once(db: Conn, error_class: str) -> None:
    job_id = enqueue(db, max_attempts=10)
    token = claim_one(db)["token"]
    assert one(db, "fail", job_id, token, "bad input", error_class) == "dead_letter"
    assert job(db, job_id)["reason"] == "permanent_error"


def test_system_errors_get_twice_the_attempts(db: Conn) -> None:
    job_id = enqueue(db, max_attempts=2, retry_policy=NO_DELAY)
    fail_until_dead(db, job_id, 3, "system")
    assert state(db, job_id) == "retrying"  # 3 attempts > max_attempts=2, still retried
    make_due(db, job_id)
    leased = claim_one(db)
    assert leased["attempt"] == 4
    assert one(db, "fail", job_id, leased["token"], "down", "system") == "dead_letter"


def test_timeout_errors_wait_longer_and_retry_in_overrides(db: Conn) -> None:
    fixed = {"strategy": "fixed", "initial_delay": 100, "jitter": False}
    waits = {}
    for error_class in ("transient", "timeout"):
        job_id = enqueue(db, error_class, retry_policy=fixed)
        token = claim_one(db)["token"]
        assert one(db, "fail", job_id, token, "slow", error_class) == "retrying"
        waits[error_class] = backoff(db, job_id)
    assert waits == {"transient": timedelta(seconds=100), "timeout": timedelta(seconds=200)}
    job_id = enqueue(db, retry_policy=fixed)
    token = claim_one(db)["token"]
    assert one(db, "fail", job_id, token, "later", retry_in=timedelta(minutes=5)) == "retrying"
    assert backoff(db, job_id) == timedelta(minutes=5)


def test_policy_precedence_type_queue_job(db: Conn) -> None:
    """Most specific wins, key by key: job override > job type policy > queue default."""
    one(db, "configure_queue", "pq", {"retry_policy": {"strategy": "fixed", "initial_delay": 100, "jitter": False}})
    one(db, "set_retry_policy", "typed", Jsonb({"initial_delay": 200, "max_attempts": 3}))
    waits = {}
    for name, kwargs in [("plain", {}), ("typed", {}), ("own", {"retry_policy": {"initial_delay": 300}})]:
        job_id = enqueue(db, "typed" if name != "plain" else "plain", queue="pq", **kwargs)
        leased = claim_one(db, ["pq"])
        assert one(db, "fail", job_id, leased["token"], "x") == "retrying"
        waits[name] = backoff(db, job_id).total_seconds()
        if name == "typed":
            assert leased["max_attempts"] == 3  # the type policy's max_attempts
    assert waits == {"plain": 100, "typed": 200, "own": 300}


def test_unknown_error_class_changes_nothing(db: Conn) -> None:
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    before = snapshot(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        one(db, "fail", job_id, token, "x", "cosmic-ray")
    assert err.value.diag.column_name == "error_class"
    assert str(err.value.diag.message_primary).startswith("error_class: ")
    assert snapshot(db) == before


def test_error_history_is_bounded_and_capped(db: Conn) -> None:
    job_id = enqueue(db, max_attempts=100, retry_policy=NO_DELAY)
    for n in range(55):
        make_due(db, job_id)
        token = claim_one(db)["token"]
        one(db, "fail", job_id, token, "m" * 10_000, traceback="t" * 40_000 if n == 54 else None)
    errors = job(db, job_id)["errors"]
    assert len(errors) == 50 and errors[0]["attempt"] == 6 and errors[-1]["attempt"] == 55
    assert len(errors[-1]["message"]) == 8192 and len(errors[-1]["traceback"]) == 32768


def test_repeated_fail_answers_the_first_outcome(db: Conn) -> None:
    job_id = enqueue(db, retry_policy=NO_DELAY)
    token = claim_one(db)["token"]
    assert one(db, "fail", job_id, token, "x") == "retrying"
    before = view(db, job_id)
    assert one(db, "fail", job_id, token, "x again", "permanent") == "retrying"
    assert view(db, job_id) == before


# -- cancel, snooze, release ---------------------------------------------------------------------


def test_cancel_waiting_and_running_jobs(db: Conn) -> None:
    waiting = enqueue(db, delay=timedelta(hours=1))
    assert one(db, "cancel", waiting, "not needed") == "cancelled"
    row = job(db, waiting)
    assert row["state"] == "cancelled" and row["reason"] == "not needed" and hot_row(db, waiting) is None
    assert one(db, "cancel", waiting) == "already_finished"

    running = enqueue(db)
    token = claim_one(db)["token"]
    assert one(db, "cancel", running, "stop") == "cancel_requested"
    assert state(db, running) == "processing"
    [hb] = rows(db, "heartbeat", running, token)
    assert hb["status"] == "ok" and hb["cancel_requested"] is True
    assert one(db, "fail", running, token, "stopping", "cancelled") == "cancelled"
    row = job(db, running)
    assert row["state"] == "cancelled" and row["reason"] == "stop"
    assert transitions(db, running)[-1] == ("processing", "cancelled")

    abandoned = enqueue(db)
    claim_one(db)
    one(db, "cancel", abandoned)
    expire_lease(db, abandoned)
    assert one(db, "reconcile")["leases_cancelled"] == 1
    assert state(db, abandoned) == "cancelled"

    with pytest.raises(psycopg.errors.NoDataFound) as err:
        one(db, "cancel", 10**12)
    assert err.value.diag.column_name == "id"


def test_snooze_or_release_of_a_job_asked_to_cancel_finishes_it(db: Conn) -> None:
    for call in ("snooze", "release"):
        job_id = enqueue(db, call)
        token = claim_one(db)["token"]
        one(db, "cancel", job_id)
        args = (job_id, token, timedelta(0)) if call == "snooze" else (job_id, token)
        assert one(db, call, *args) == "cancelled"
        assert state(db, job_id) == "cancelled"


def test_snooze_gives_the_attempt_back_and_waits(db: Conn) -> None:
    job_id = enqueue(db, max_attempts=1)
    token = claim_one(db)["token"]
    with db.transaction():  # one now() for the snooze and the check
        assert one(db, "snooze", job_id, token, timedelta(minutes=10)) == "snoozed"
        now = db.execute("SELECT now() AS t").fetchone()["t"]
    row = hot_row(db, job_id)
    assert row["state"] == "pending" and row["attempt"] == 0 and row["lease_expires_at"] is None
    assert row["run_at"] - now == timedelta(minutes=10)
    assert claim(db) == []
    make_due(db, job_id)
    leased = claim_one(db)
    assert leased["attempt"] == 1 and leased["token"] > token  # max_attempts=1 still allows it
    assert one(db, "snooze", job_id, token, timedelta(0)) == "lease_lost"
    assert transitions(db, job_id)[2] == ("processing", "pending")


def test_release_makes_the_job_claimable_at_once(db: Conn) -> None:
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    assert one(db, "release", job_id, token) == "released"
    leased = claim_one(db)
    assert leased["id"] == job_id and leased["attempt"] == 1
    assert one(db, "release", job_id, token) == "lease_lost"


def test_logs_and_progress_are_fenced(db: Conn) -> None:
    job_id = enqueue(db)
    token = claim_one(db)["token"]
    assert one(db, "add_log", job_id, token, "step 1") == "ok"
    assert one(db, "set_progress", job_id, token, Decimal("42.5")) == "ok"
    assert one(db, "add_log", job_id, token + 1, "intruder") == "lease_lost"
    assert job(db, job_id)["progress"] == 42.5
    assert [r["message"] for r in rows(db, "job_logs", job_id)] == ["step 1"]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        one(db, "set_progress", job_id, token, 101)
    assert err.value.diag.column_name == "percent"


# -- reconcile, retention, dead letters ------------------------------------------------------------


def test_reconcile_lease_expiry_is_a_timeout_failure(db: Conn) -> None:
    retried = enqueue(db, "r", retry_policy=NO_DELAY, max_attempts=3)
    exhausted = enqueue(db, "x", max_attempts=1)
    leased = {r["id"]: r["token"] for r in claim(db, batch=2)}
    for job_id in leased:
        expire_lease(db, job_id)
    summary = one(db, "reconcile")
    assert (summary["expired_leases"], summary["leases_retried"], summary["leases_dead_lettered"]) == (2, 1, 1)
    row = job(db, retried)
    assert row["state"] == "retrying" and row["errors"][-1]["error_class"] == "timeout"
    assert row["errors"][-1]["token"] == leased[retried] and row["errors"][-1]["source"] == "reconcile"
    dead = job(db, exhausted)
    assert dead["state"] == "dead_letter" and dead["reason"] == "visibility_timeout_exceeded"
    assert len(dead["errors"]) == 1
    assert transitions(db, exhausted)[-1] == ("processing", "dead_letter")


def _reconcile_scenario(db: Conn) -> None:
    """One job for each reconcile step."""
    one(db, "configure_queue", "aged", {"aging_interval": 60})
    retried = enqueue(db, "r", queue="leases", retry_policy=NO_DELAY)
    exhausted = enqueue(db, "x", queue="leases", max_attempts=1)
    asked = enqueue(db, "c", queue="leases")
    claim(db, ["leases"], batch=3)
    one(db, "cancel", asked)
    for job_id in (retried, exhausted, asked):
        expire_lease(db, job_id)
    ttl = enqueue(db, "ttl", expires_at=datetime.now(UTC) + timedelta(hours=1))
    db.execute("UPDATE jobqueue.job SET expires_at = now() - interval '1 second' WHERE id = %s", [ttl])
    dead = enqueue(db, "dead", queue="dl")
    one(db, "fail", dead, claim_one(db, ["dl"])["token"], "x", "permanent")
    db.execute("UPDATE jobqueue.dead_letter SET finished_at = now() - interval '30 days' WHERE id = %s", [dead])
    old = enqueue(db, "old", queue="hist")
    one(db, "complete", old, claim_one(db, ["hist"])["token"])
    db.execute("UPDATE jobqueue.job_history SET finished_at = now() - interval '8 days' WHERE id = %s", [old])
    waiting = enqueue(db, "slow", queue="aged", priority=1)
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '3 minutes' WHERE id = %s", [waiting])


def test_reconcile_summary_and_dry_run(db: Conn) -> None:
    _reconcile_scenario(db)
    expected = {"expired_leases": 3, "leases_retried": 1, "leases_dead_lettered": 1, "leases_cancelled": 1,
                "expired": 1, "dead_letters_archived": 1, "history_pruned": 1, "aged": 1,
                "partitions_created": 0, "partitions_dropped": 0}
    before = snapshot(db)
    dry = one(db, "reconcile", dry_run=True)
    assert snapshot(db) == before  # dry_run changes nothing
    assert dry["dry_run"] is True and {k: dry[k] for k in expected} == expected
    done = one(db, "reconcile")
    assert done["dry_run"] is False and {k: done[k] for k in expected} == expected
    again = one(db, "reconcile")
    assert all(v == 0 for k, v in again.items() if isinstance(v, int)), again


def test_reconcile_is_safe_to_run_concurrently(db: Conn, connect: Connect) -> None:
    """Several hosts at once: no errors, each expiry transitions once."""
    ids = [r["enqueue_many"] for r in rows(db, "enqueue_many", Jsonb([{"type": "t"}] * 300))]
    claim(db, batch=300)
    db.execute("UPDATE jobqueue.job SET lease_expires_at = now() - interval '1 second'")
    conns = [connect() for _ in range(4)]
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def run(conn: Conn) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                results.append(one(conn, "reconcile", batch=50))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["expired_leases"] for r in results) == 300
    n = db.execute("SELECT count(*) AS n FROM jobqueue.job_event WHERE job_id = ANY(%s) "
                   "AND from_state = 'processing' AND to_state = 'retrying'", [ids]).fetchone()["n"]
    assert n == 300


def test_history_partitions_and_pruning(db: Conn) -> None:
    names = [r["relname"] for r in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'jobqueue.job_history'::regclass ORDER BY 1").fetchall()]
    today = db.execute("SELECT (now() AT TIME ZONE 'UTC')::date AS d").fetchone()["d"]
    ahead = [f"job_history_p{(today + timedelta(days=k)):%Y%m%d}" for k in range(4)]
    assert set(ahead) <= set(names) and "job_history_default" in names
    # an old day's partition, an old row in the DEFAULT partition, a short-retention queue
    db.execute("CREATE TABLE jobqueue.job_history_p20200101 PARTITION OF jobqueue.job_history "
               "FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00')")
    def finished_job(finished_at: str) -> int:
        return int(db.execute(
            "INSERT INTO jobqueue.job_history (id, queue, type, payload, state, max_attempts, finished_at) "
            "VALUES (nextval('jobqueue.job_id_seq'), 'default', 't', '{}', 'completed', 1, %s::timestamptz) "
            "RETURNING id", [finished_at]).fetchone()["id"])

    in_old_partition = finished_job("2020-01-01 12:00+00")
    in_default = finished_job(str(datetime.now(UTC) - timedelta(days=20)))
    one(db, "configure_queue", "short", {"history_retention": 60})
    short = enqueue(db, queue="short")
    one(db, "complete", short, claim_one(db, ["short"])["token"])
    db.execute("UPDATE jobqueue.job_history SET finished_at = now() - interval '2 minutes' WHERE id = %s", [short])
    keep = enqueue(db)
    one(db, "complete", keep, claim_one(db)["token"])
    assert db.execute("SELECT tableoid::regclass::text AS t FROM jobqueue.job_history WHERE id = %s",
                      [in_default]).fetchone()["t"] == "jobqueue.job_history_default"
    summary = one(db, "reconcile")
    assert summary["partitions_dropped"] == 1 and summary["history_pruned"] == 2
    left = {r["id"] for r in db.execute("SELECT id FROM jobqueue.job_history").fetchall()}
    assert left == {keep}
    assert in_old_partition not in left
    assert db.execute("SELECT to_regclass('jobqueue.job_history_p20200101') AS r").fetchone()["r"] is None


def test_archive_and_purge_dead_letters(db: Conn) -> None:
    one(db, "configure_queue", "dq", {"dead_letter_max_age_days": 1})
    a, b, c = (enqueue(db, queue="dq") for _ in range(3))
    for job_id in (a, b, c):
        one(db, "fail", job_id, claim_one(db, ["dq"])["token"], "x", "permanent")
    db.execute("UPDATE jobqueue.dead_letter SET finished_at = now() - interval '2 days' WHERE id = %s", [a])
    assert one(db, "reconcile")["dead_letters_archived"] == 1  # per queue: older than 1 day
    assert state(db, a) == "archived" and job(db, a)["archived_at"] is not None
    assert one(db, "archive_dead_letters", 0) == 2
    assert {state(db, i) for i in (a, b, c)} == {"archived"}
    assert rows(db, "redrive", {}) == []  # archived letters are redriven only when asked for by state
    assert [r["redrive"] for r in rows(db, "redrive", {"state": "archived", "ids": [b]})] == [b]
    assert one(db, "purge_dead_letters", {"queue": "dq"}) == 2
    assert db.execute("SELECT count(*) AS n FROM jobqueue.dead_letter").fetchone()["n"] == 0
    assert transitions(db, c)[-2:] == [("dead_letter", "archived"), ("archived", None)]


def test_redrive_filters_dry_run_and_limit(db: Conn) -> None:
    ids = []
    for n in range(5):
        job_id = enqueue(db, "even" if n % 2 == 0 else "odd", queue="rq")
        one(db, "fail", job_id, claim_one(db, ["rq"])["token"], "x", "permanent")
        ids.append(job_id)
    before = snapshot(db)
    assert [r["redrive"] for r in rows(db, "redrive", {"type": "even"}, dry_run=True)] == ids[0::2]
    assert snapshot(db) == before
    assert [r["redrive"] for r in rows(db, "redrive", {"queue": "rq"}, limit=2)] == ids[:2]
    assert one(db, "retry", ids[4]) == ids[4]
    assert {state(db, i) for i in ids[:2] + ids[4:]} == {"pending"} and state(db, ids[2]) == "dead_letter"
    with pytest.raises(psycopg.errors.NoDataFound):
        one(db, "retry", ids[0])  # not a dead letter any more
    # by the class of the last failure
    flaky = enqueue(db, queue="rq2", max_attempts=1)
    one(db, "fail", flaky, claim_one(db, ["rq2"])["token"], "x", "timeout")
    assert [r["redrive"] for r in rows(db, "redrive", {"error_class": "timeout"}, dry_run=True)] == [flaky]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        rows(db, "redrive", {"colour": "red"})
    assert err.value.diag.column_name == "filter" and 'unknown key "colour"' in str(err.value)


def test_priority_aging(db: Conn) -> None:
    one(db, "configure_queue", "aq", {"aging_interval": 60})
    old_low = enqueue(db, queue="aq", priority=0)
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '5 minutes 30 seconds' WHERE id = %s", [old_low])
    fresh = enqueue(db, queue="aq", priority=3)
    assert one(db, "reconcile")["aged"] == 1
    assert job(db, old_low)["priority"] == 5 and job(db, fresh)["priority"] == 3
    assert [r["id"] for r in claim(db, ["aq"], batch=2)] == [old_low, fresh]


def test_queue_stats_and_metrics_on_a_known_data_set(db: Conn) -> None:
    # queue s: 2 runnable, 1 scheduled, 1 retrying, 1 processing, 1 dead letter
    runnable = [enqueue(db, queue="s"), enqueue(db, queue="s")]
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '60 seconds' WHERE id = %s", [runnable[0]])
    enqueue(db, queue="s", delay=timedelta(hours=1))
    r = enqueue(db, queue="s", retry_policy={"strategy": "fixed", "initial_delay": 600})
    p = enqueue(db, queue="s")
    d = enqueue(db, queue="s")
    db.execute("UPDATE jobqueue.job SET priority = 10 WHERE id IN (%s, %s, %s)", [r, p, d])
    leased = {x["id"]: x["token"] for x in claim(db, ["s"], batch=3)}
    assert set(leased) == {r, p, d}
    one(db, "fail", r, leased[r], "later")
    one(db, "fail", d, leased[d], "bad", "permanent")
    stats = {x["queue"]: x for x in rows(db, "queue_stats")}["s"]
    assert (stats["pending"], stats["scheduled"], stats["retrying"], stats["processing"], stats["dead_letters"]) == (
        2, 1, 1, 1, 1)
    assert 60 <= stats["oldest_pending_age_s"] < 120 and stats["paused"] is False
    # queue m: three completions taking 1, 2 and 3 seconds; one failed attempt; one dead letter
    done = [enqueue(db, queue="m") for _ in range(3)]
    for job_id in done:
        one(db, "complete", job_id, claim_one(db, ["m"])["token"])
    for k, job_id in enumerate(done, start=1):
        db.execute("UPDATE jobqueue.job_history SET claimed_at = finished_at - make_interval(secs => %s) "
                   "WHERE id = %s", [k, job_id])
    flaky = enqueue(db, queue="m", retry_policy=NO_DELAY)
    one(db, "fail", flaky, claim_one(db, ["m"])["token"], "once")
    one(db, "fail", flaky, claim_one(db, ["m"])["token"], "twice", "permanent")
    m = {x["queue"]: x for x in rows(db, "metrics", timedelta(hours=1))}["m"]
    assert (m["completed"], m["failed"]) == (3, 2)
    assert m["success_rate"] == pytest.approx(0.75) and m["error_rate"] == pytest.approx(0.4)
    assert m["avg_duration_s"] == pytest.approx(2) and m["p95_duration_s"] == pytest.approx(2.9)
    assert m["jobs_per_minute"] == pytest.approx(3 / 60)


def test_workers_register_heartbeat_unregister(db: Conn) -> None:
    one(db, "register_worker", "w-1", "host-a", 123, ["default"], 4, {"v": "1"})
    assert one(db, "worker_heartbeat", "w-1", 7) is True
    job_id = enqueue(db)
    claim_one(db, worker_id="w-1")
    [w] = db.execute("SELECT * FROM jobqueue.workers").fetchall()
    assert (w["host"], w["pid"], w["queues"], w["concurrency"], w["jobs_done"]) == ("host-a", 123, ["default"], 4, 7)
    assert w["status"] == "healthy" and w["running"] == 1 and w["stopped_at"] is None
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '10 minutes'")
    assert db.execute("SELECT status FROM jobqueue.workers").fetchone()["status"] == "unhealthy"
    one(db, "unregister_worker", "w-1")
    assert db.execute("SELECT status FROM jobqueue.workers").fetchone()["status"] == "stopped"
    assert one(db, "worker_heartbeat", "w-1", 8) is False
    assert job_id


# -- bad input (INPUT-01, SQL side) ------------------------------------------------------------

H = timedelta(hours=1)
BAD_INPUT: list[tuple[str, tuple[Any, ...], dict[str, Any], str, str]] = [
    # (function, args, kwargs, field, SQLSTATE)
    ("enqueue", ("t",), {"queue": ""}, "queue", "22023"),
    ("enqueue", ("t",), {"queue": "a b"}, "queue", "22023"),
    ("enqueue", ("t",), {"queue": "x" * 129}, "queue", "22001"),
    ("enqueue", ("",), {}, "type", "22023"),
    ("enqueue", ("x" * 256,), {}, "type", "22001"),
    ("enqueue", ("a\nb",), {}, "type", "22023"),
    ("enqueue", ("t", Jsonb([1])), {}, "payload", "22023"),
    ("enqueue", ("t", Jsonb("text")), {}, "payload", "22023"),
    ("enqueue", ("t", Jsonb({"big": "x" * 262_144})), {}, "payload", "22001"),
    ("enqueue", ("t",), {"priority": 11}, "priority", "22023"),
    ("enqueue", ("t",), {"priority": -1}, "priority", "22023"),
    ("enqueue", ("t",), {"priority": "urgent"}, "priority", "22023"),
    ("enqueue", ("t",), {"priority": Decimal("2.5")}, "priority", "22023"),
    ("enqueue", ("t",), {"delay": timedelta(seconds=-1)}, "delay", "22023"),
    ("enqueue", ("t",), {"delay": timedelta(days=31)}, "delay", "22023"),
    ("enqueue", ("t",), {"run_at": datetime(2030, 1, 1, tzinfo=UTC), "delay": H}, "run_at", "22023"),
    ("enqueue", ("t",), {"run_at": datetime.now(UTC) + timedelta(days=40)}, "run_at", "22023"),
    ("enqueue", ("t",), {"visibility_timeout": timedelta(0)}, "visibility_timeout", "22023"),
    ("enqueue", ("t",), {"visibility_timeout": timedelta(hours=13)}, "visibility_timeout", "22023"),
    ("enqueue", ("t",), {"timeout": timedelta(seconds=-5)}, "timeout", "22023"),
    ("enqueue", ("t",), {"max_attempts": 0}, "max_attempts", "22023"),
    ("enqueue", ("t",), {"max_attempts": 1001}, "max_attempts", "22023"),
    ("enqueue", ("t",), {"unique_key": ""}, "unique_key", "22023"),
    ("enqueue", ("t",), {"unique_key": "k" * 256}, "unique_key", "22001"),
    ("enqueue", ("t",), {"depends_on": [10**12]}, "depends_on", "22023"),
    ("enqueue", ("t",), {"tags": [f"t{i}" for i in range(33)]}, "tags", "22023"),
    ("enqueue", ("t",), {"tags": [""]}, "tags", "22023"),
    ("enqueue", ("t",), {"retry_policy": {"strategy": "sideways"}}, "retry_policy", "22023"),
    ("enqueue", ("t",), {"retry_policy": {"initial_delay": -1}}, "retry_policy", "22023"),
    ("enqueue", ("t",), {"retry_policy": {"colour": "red"}}, "retry_policy", "22023"),
    ("enqueue", ("t",), {"metadata": Jsonb([1])}, "metadata", "22023"),
    ("enqueue", ("t",), {"expires_at": datetime(2000, 1, 1, tzinfo=UTC)}, "expires_at", "22023"),
    ("enqueue", ("t",), {"tenant_id": "x" * 256}, "tenant_id", "22001"),
    ("claim", (["default"],), {"batch": 0}, "batch", "22023"),
    ("claim", (["default"],), {"batch": 1001}, "batch", "22023"),
    ("claim", ([],), {}, "queues", "22023"),
    ("claim", (["bad queue"],), {}, "queues", "22023"),
    ("claim", (["default"],), {"visibility_timeout": timedelta(0)}, "visibility_timeout", "22023"),
    ("claim", (["default"],), {"types": [""]}, "types", "22023"),
    ("heartbeat", (1, 1, timedelta(hours=13)), {}, "extend_by", "22023"),
    ("heartbeat", (None, 1), {}, "id", "22023"),
    ("complete", (1, None), {}, "token", "22023"),
    ("fail", (1, 1, "x", "meteor"), {}, "error_class", "22023"),
    ("fail", (1, 1, "x"), {"retry_in": timedelta(seconds=-1)}, "retry_in", "22023"),
    ("snooze", (1, 1, timedelta(seconds=-1)), {}, "delay", "22023"),
    ("set_progress", (1, 1, Decimal(101)), {}, "percent", "22023"),
    ("configure_queue", ("default", Jsonb({"colour": "red"})), {}, "settings", "22023"),
    ("configure_queue", ("default", Jsonb({"max_size": 0})), {}, "max_size", "22023"),
    ("configure_queue", ("default", Jsonb({"visibility_timeout": 99999})), {}, "visibility_timeout", "22023"),
    ("configure_queue", ("bad queue", Jsonb({})), {}, "queue", "22023"),
    ("set_retry_policy", ("t", Jsonb({"strategy": "custom"})), {}, "policy", "22023"),
    ("redrive", (Jsonb({}),), {"limit": 0}, "limit", "22023"),
    ("redrive", (Jsonb([]),), {}, "filter", "22023"),
    ("metrics", (timedelta(0),), {}, "window", "22023"),
    ("archive_dead_letters", (-1,), {}, "max_age_days", "22023"),
    ("retry", (10**12,), {}, "id", "P0002"),
    ("cancel", (10**12,), {}, "id", "P0002"),
]


@pytest.mark.parametrize(("function", "args", "kwargs", "field", "sqlstate"), BAD_INPUT,
                         ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD_INPUT)])
def test_bad_input_is_refused_naming_the_field(
    db: Conn, function: str, args: tuple[Any, ...], kwargs: dict[str, Any], field: str, sqlstate: str
) -> None:
    """INPUT-01: SQLSTATE, message starting with the field, COLUMN = the field, nothing written."""
    enqueue(db, "existing")  # something to leave untouched
    before = snapshot(db)
    with pytest.raises(psycopg.Error) as err:
        rows(db, function, *args, **kwargs)
    diag = err.value.diag
    assert err.value.sqlstate == sqlstate, str(err.value)
    assert str(diag.message_primary).startswith(f"{field}: "), diag.message_primary
    assert diag.column_name == field
    assert snapshot(db) == before


@pytest.mark.parametrize(("text", "sqlstate"), [
    ('{"a": NaN}', "22P02"), ('{"a": Infinity}', "22P02"), ('{"a": "\\u0000"}', "22P05"),
    ('{"a": "\\ud800"}', "22P02"), ('{"a": 1', "22P02")])
def test_json_the_parser_refuses(db: Conn, text: str, sqlstate: str) -> None:
    """NaN, \\u0000 and lone surrogates never reach the API: the jsonb parser refuses them."""
    with pytest.raises(psycopg.Error) as err:
        db.execute("SELECT jobqueue.enqueue('t', %s::jsonb)", [text])
    assert err.value.sqlstate == sqlstate
    assert counts(db)["job"] == 0


def test_duplicate_json_keys_keep_the_last(db: Conn) -> None:
    job_id = db.execute("SELECT jobqueue.enqueue('t', '{\"a\": 1, \"a\": 2}') AS id").fetchone()["id"]
    assert job(db, job_id)["payload"] == {"a": 2}


def test_queue_full(db: Conn) -> None:
    """A backlog cap refuses enqueue with 53400 naming the queue; nothing is written."""
    one(db, "configure_queue", "qf", {"max_size": 2})
    enqueue(db, queue="qf")
    enqueue(db, queue="qf", delay=H)  # scheduled jobs are backlog too
    before = snapshot(db)
    with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as err:
        enqueue(db, queue="qf")
    assert err.value.sqlstate == "53400" and '"qf"' in str(err.value) and err.value.diag.column_name == "queue"
    with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
        rows(db, "enqueue_many", Jsonb([{"type": "t", "queue": "other"}, {"type": "t", "queue": "qf"}]))
    assert snapshot(db) == before
    enqueue(db, queue="other")  # other queues are not affected
    leased = claim_one(db, ["qf"])
    one(db, "complete", leased["id"], leased["token"])
    enqueue(db, queue="qf")  # room again


# -- notifications -------------------------------------------------------------------------------


def drain(listener: Conn, timeout: float, stop_after: int | None = None) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=timeout, stop_after=stop_after)]


def test_notify_once_per_transaction_and_queue_with_only_the_queue_name(db: Conn, connect: Connect) -> None:
    listener = connect()
    listener.execute("LISTEN jobqueue")
    with db.transaction():
        for _ in range(3):
            enqueue(db, queue="na")
        enqueue(db, queue="nb")
        enqueue(db, queue="nc", delay=H)  # not runnable now: no notification
        rows(db, "enqueue_many", Jsonb([{"type": "t", "queue": "na"}, {"type": "t", "queue": "na"}]))
    got = drain(listener, 10, stop_after=2)
    assert sorted(got) == [("jobqueue", "na"), ("jobqueue", "nb")]
    assert drain(listener, 0.3) == []  # no third one
    # a paused queue is not woken; resuming it is
    one(db, "pause_queue", "np")
    enqueue(db, queue="np")
    assert drain(listener, 0.3) == []
    one(db, "resume_queue", "np")
    assert drain(listener, 10, stop_after=1) == [("jobqueue", "np")]
    # a job handed back for now wakes its queue
    leased = claim_one(db, ["np"])
    assert one(db, "release", leased["id"], leased["token"]) == "released"
    assert drain(listener, 10, stop_after=1) == [("jobqueue", "np")]


def test_rolled_back_enqueue_leaves_nothing_and_notifies_nobody(db: Conn, connect: Connect) -> None:
    listener = connect()
    listener.execute("LISTEN jobqueue")
    tx = connect(autocommit=False)
    job_id = enqueue(tx)
    tx.rollback()
    assert drain(listener, 0.3) == []
    assert db.execute("SELECT count(*) AS n FROM jobqueue.jobs WHERE id = %s", [job_id]).fetchone()["n"] == 0


# -- audit, roles, views ---------------------------------------------------------------------------


def test_one_event_per_transition_with_the_session_user(
    db: Conn, connect: Connect, login_role: Callable[[str], str]
) -> None:
    producer_name, worker_name = login_role("jobqueue_producer"), login_role("jobqueue_worker")
    producer, worker = connect(user=producer_name), connect(user=worker_name)
    job_id = enqueue(producer, retry_policy=NO_DELAY)
    first = claim_one(worker)
    assert one(worker, "fail", job_id, first["token"], "once") == "retrying"
    second = claim_one(worker)
    assert one(worker, "complete", job_id, second["token"]) == "completed"
    assert one(worker, "complete", job_id, second["token"]) == "already_completed"  # no event
    got = [(e["from_state"], e["to_state"], e["actor"], e["token"]) for e in events(db, job_id)]
    assert got == [
        (None, "pending", producer_name, None),
        ("pending", "processing", worker_name, first["token"]),
        ("processing", "retrying", worker_name, first["token"]),
        ("retrying", "processing", worker_name, second["token"]),
        ("processing", "completed", worker_name, second["token"]),
    ]
    assert "payload" not in json.dumps([e["detail"] for e in events(db, job_id)])
    assert job(db, job_id)["created_by"] == producer_name


def test_job_event_is_append_only(db: Conn, connect: Connect, login_role: Callable[[str], str]) -> None:
    enqueue(db)
    for statement in ("UPDATE jobqueue.job_event SET actor = 'x'", "DELETE FROM jobqueue.job_event",
                      "TRUNCATE jobqueue.job_event"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            db.execute(statement)  # even the owner
        assert "append-only" in str(err.value)
    admin = connect(user=login_role("jobqueue_admin"))
    admin.execute("SELECT set_config('jobqueue.pruning', 'on', false)")  # the flag alone is not enough
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        admin.execute("DELETE FROM jobqueue.job_event")
    assert db.execute("SELECT count(*) AS n FROM jobqueue.job_event").fetchone()["n"] == 1


def test_retention_prunes_old_events(db: Conn) -> None:
    job_id = enqueue(db)
    db.execute("ALTER TABLE jobqueue.job_event DISABLE TRIGGER job_event_append_only")  # as the owner, for the setup
    db.execute("UPDATE jobqueue.job_event SET at = now() - interval '31 days' WHERE job_id = %s", [job_id])
    db.execute("ALTER TABLE jobqueue.job_event ENABLE TRIGGER job_event_append_only")
    enqueue(db)
    assert one(db, "reconcile")["events_pruned"] == 1
    assert db.execute("SELECT count(*) AS n FROM jobqueue.job_event").fetchone()["n"] == 1
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the flag does not outlive the prune
        db.execute("DELETE FROM jobqueue.job_event")


def test_producers_see_and_cancel_only_their_own_jobs(
    db: Conn, connect: Connect, login_role: Callable[[str], str]
) -> None:
    p1, p2 = connect(user=login_role("jobqueue_producer")), connect(user=login_role("jobqueue_producer"))
    admin = connect(user=login_role("jobqueue_admin"))
    mine, theirs = enqueue(p1, delay=H), enqueue(p2, delay=H)
    assert [r["id"] for r in p1.execute("SELECT id FROM jobqueue.jobs").fetchall()] == [mine]
    assert {r["id"] for r in admin.execute("SELECT id FROM jobqueue.jobs").fetchall()} == {mine, theirs}
    with pytest.raises(psycopg.errors.NoDataFound) as err:  # "no job", as its reads say (revision 0018)
        one(p1, "cancel", theirs)
    assert err.value.diag.column_name == "id" and err.value.diag.message_primary == f"id: no job {theirs}"
    assert one(p1, "cancel", mine) == "cancelled"
    assert one(admin, "cancel", theirs) == "cancelled"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        p1.execute("SELECT * FROM jobqueue.dead_letters")


def test_jobs_view_has_one_row_per_job_in_every_state(db: Conn) -> None:
    pending = enqueue(db, "p", delay=H)
    completed = enqueue(db, "c")
    one(db, "complete", completed, claim_one(db)["token"])
    dead = enqueue(db, "d")
    one(db, "fail", dead, claim_one(db)["token"], "x", "permanent")
    archived = enqueue(db, "a")
    one(db, "fail", archived, claim_one(db)["token"], "x", "permanent")
    db.execute("UPDATE jobqueue.dead_letter SET finished_at = now() - interval '1 day' WHERE id = %s", [archived])
    one(db, "archive_dead_letters", 1)
    processing = enqueue(db, "r")
    claim_one(db)
    retrying = enqueue(db, "y", retry_policy={"strategy": "fixed", "initial_delay": 60})
    one(db, "fail", retrying, claim_one(db)["token"], "x")
    cancelled = enqueue(db, "z", delay=H)
    one(db, "cancel", cancelled)
    got = {r["id"]: r["state"] for r in db.execute("SELECT id, state::text FROM jobqueue.jobs").fetchall()}
    assert got == {pending: "pending", completed: "completed", dead: "dead_letter", archived: "archived",
                   processing: "processing", retrying: "retrying", cancelled: "cancelled"}
    assert job(db, dead)["last_error"] == "x"


def test_lifecycle_through_psql_alone(db_url: str, psql: str, db: Conn) -> None:
    """Another service with nothing but psql: enqueue, claim, heartbeat, complete, fail to DLQ, redrive."""
    script = r"""
\set ON_ERROR_STOP 1
SELECT jobqueue.enqueue('report.build', '{"month": "2030-01"}', queue => 'reports', priority => 'high') AS id \gset
SELECT id AS got, token FROM jobqueue.claim(ARRAY['reports'], 'psql-worker', 1) \gset
\echo claimed :got
SELECT status AS hb FROM jobqueue.heartbeat(:id, :token, interval '5 minutes') \gset
\echo heartbeat :hb
SELECT jobqueue.complete(:id, :token, '{"rows": 12}') AS done \gset
\echo complete :done
SELECT jobqueue.complete(:id, :token) AS again \gset
\echo again :again
SELECT jobqueue.enqueue('report.build', '{}', queue => 'reports', max_attempts => 1) AS id2 \gset
SELECT token AS token2 FROM jobqueue.claim(ARRAY['reports'], 'psql-worker', 1) \gset
SELECT jobqueue.fail(:id2, :token2, 'upstream 503', 'transient') AS failed \gset
\echo fail :failed
SELECT reason FROM jobqueue.dead_letters WHERE id = :id2 \gset
\echo reason :reason
SELECT count(*) AS n FROM jobqueue.redrive('{"queue": "reports"}') \gset
\echo redrive :n
SELECT token AS token3 FROM jobqueue.claim(ARRAY['reports'], 'psql-worker', 1) \gset
SELECT (:token3 > :token2) AS higher \gset
\echo higher :higher
SELECT jobqueue.complete(:id2, :token2) AS stale \gset
\echo stale :stale
SELECT jobqueue.complete(:id2, :token3) AS done2 \gset
\echo complete :done2
"""
    proc = subprocess.run([psql, "-X", "-q", "-d", db_url, "-f", "-"], input=script, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    first = db.execute("SELECT min(id) AS id FROM jobqueue.jobs").fetchone()["id"]
    assert [line for line in lines if line] == [
        f"claimed {first}", "heartbeat ok", "complete completed", "again already_completed", "fail dead_letter",
        "reason max_retries_exceeded", "redrive 1", "higher t", "stale lease_lost", "complete completed"]


# -- shape -------------------------------------------------------------------------------------


def _nested_plans(db: Conn, statement: str) -> list[dict[str, Any]]:
    """The JSON plans of every statement run inside `statement` (auto_explain)."""
    with explained(db) as plans:
        db.execute(statement)
    return plans


def test_claim_is_an_ordered_index_scan_without_sort(db: Conn) -> None:
    rows(db, "enqueue_many", Jsonb([{"type": "t", "priority": i % 11} for i in range(5000)]))
    db.execute("ANALYZE jobqueue.job")
    plans = _nested_plans(db, "SELECT * FROM jobqueue.claim(ARRAY['default'], 'w', 10)")
    plans = [p for p in plans if any(n["Node Type"] == "LockRows" for n in nodes(p["Plan"]))]
    assert len(plans) == 1, "expected one locking statement"
    locks = [n for p in plans for n in nodes(p["Plan"]) if n["Node Type"] == "LockRows"]
    below = [n for lock in locks for n in nodes(lock)]
    # the rows to lock come straight out of the claim index, in claim order: no sort of the table
    assert any(n.get("Index Name") == "job_claim_idx" for n in below)
    assert not any(n["Node Type"] in ("Sort", "Incremental Sort", "Seq Scan") for n in below), below
    # the only sort allowed orders the (at most `batch`) claimed rows handed back
    sorts = [n for p in plans for n in nodes(p["Plan"]) if n["Node Type"] == "Sort"]
    inputs = [c for sort in sorts for c in sort["Plans"] if c.get("Parent Relationship") == "Outer"]
    assert all(c["Node Type"] == "CTE Scan" for c in inputs), inputs


def test_reconcile_creates_missing_partitions_ahead(db: Conn) -> None:
    tomorrow = db.execute("SELECT to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD') AS d").fetchone()["d"]
    db.execute(f"DROP TABLE jobqueue.job_history_p{tomorrow}")
    assert one(db, "reconcile", dry_run=True)["partitions_created"] == 1
    assert one(db, "reconcile")["partitions_created"] == 1
    created = db.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", [f"jobqueue.job_history_p{tomorrow}"])
    assert created.fetchone()["ok"]
    assert one(db, "reconcile")["partitions_created"] == 0


def _statistics_targets(db: Conn, table: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT attname, coalesce(attstattarget::int, -1) AS target FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [table],
    ).fetchall()
    return {r["attname"]: r["target"] for r in rows}


def test_analyze_of_the_hot_tables_samples_3000_rows_without_the_documents(db: Conn) -> None:
    """Issue 13: autovacuum analyzes jobqueue.job at nearly every visit under load; at the
    default target it sampled 30,000 rows and sorted every column of them, payloads included
    (0.35-0.5 s of a core each time on 2 cores). New history partitions get the same targets."""
    db.execute(
        "SELECT count(*) FROM jobqueue.enqueue_batch(array_fill('bulk'::text, ARRAY[4000]), "
        "array_fill('{\"k\": 1}'::jsonb, ARRAY[4000]))"
    )
    infos: list[str] = []
    db.add_notice_handler(lambda d: infos.append(d.message_primary or ""))
    db.execute("ANALYZE VERBOSE jobqueue.job")
    sample = [m for m in infos if "rows in sample" in m]
    assert sample and "3000 rows in sample" in sample[0], infos
    assert not db.execute(
        "SELECT 1 FROM pg_stats WHERE schemaname = 'jobqueue' AND tablename = 'job' AND attname = 'payload'"
    ).fetchall()

    tomorrow = db.execute("SELECT to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD') AS d").fetchone()["d"]
    db.execute(f"DROP TABLE jobqueue.job_history_p{tomorrow}")
    assert one(db, "reconcile")["partitions_created"] == 1
    for table in ("jobqueue.job", f"jobqueue.job_history_p{tomorrow}", "jobqueue.job_history_default"):
        targets = _statistics_targets(db, table)
        assert targets["payload"] == 0 and targets["output"] == 0 and targets["errors"] == 0, table
        assert targets["queue"] == targets["state"] == targets["id"] == 10, table
    events = _statistics_targets(db, "jobqueue.job_event")
    assert events["detail"] == 0 and events["job_id"] == events["at"] == 10


def test_dependent_enqueued_while_its_dependency_completes(db: Conn, connect: Connect) -> None:
    """No dependent is stranded: enqueue and completion of the dependency serialise on its row."""
    parent = enqueue(db, "parent")
    token = claim_one(db)["token"]
    producer = connect(autocommit=False)
    child = enqueue(producer, "child", depends_on=[parent])  # holds the parent's row until commit
    worker = connect()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(status=one(worker, "complete", parent, token)))
    thread.start()
    _wait_until(lambda: _waiting_on_lock(db, worker.info.backend_pid), "the completion to wait for the enqueue")
    producer.commit()
    thread.join(30)
    assert result["status"] == "completed"
    assert hot_row(db, child)["waiting_on"] == 0
    assert claim_one(db)["id"] == child


def test_dependent_enqueued_after_its_dependency_completed_in_flight(db: Conn, connect: Connect) -> None:
    parent = enqueue(db, "parent")
    token = claim_one(db)["token"]
    worker = connect(autocommit=False)
    assert one(worker, "complete", parent, token) == "completed"  # not committed yet
    producer = connect()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(id=enqueue(producer, "child", depends_on=[parent])))
    thread.start()
    _wait_until(lambda: _waiting_on_lock(db, producer.info.backend_pid), "the enqueue to wait for the completion")
    worker.commit()
    thread.join(30)
    assert hot_row(db, result["id"])["waiting_on"] == 0
    assert claim_one(db)["id"] == result["id"]


def test_redriving_a_job_that_expired_while_blocked_keeps_it_blocked(db: Conn) -> None:
    parent = enqueue(db, "parent", delay=H)
    child = enqueue(db, "child", depends_on=[parent], expires_at=datetime.now(UTC) + H)
    db.execute("UPDATE jobqueue.job SET expires_at = now() - interval '1 second' WHERE id = %s", [child])
    assert one(db, "reconcile")["expired"] == 1
    assert one(db, "retry", child) == child
    assert hot_row(db, child)["waiting_on"] == 1  # still waits for its parent
    make_due(db, parent)
    leased = claim_one(db)
    assert leased["id"] == parent and claim(db) == []
    one(db, "complete", parent, leased["token"])
    assert claim_one(db)["id"] == child
    # and when the parent failed meanwhile, the redriven child is cancelled at once
    parent2 = enqueue(db, "parent", delay=H)
    child2 = enqueue(db, "child", depends_on=[parent2], expires_at=datetime.now(UTC) + H)
    db.execute("UPDATE jobqueue.job SET expires_at = now() - interval '1 second' WHERE id = %s", [child2])
    one(db, "reconcile")
    one(db, "cancel", parent2)
    assert one(db, "retry", child2) == child2
    assert job(db, child2)["state"] == "cancelled" and job(db, child2)["reason"] == "dependency_failed"
