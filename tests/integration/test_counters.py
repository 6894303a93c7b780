"""Counters the database keeps (issue 17): every transition path counted exactly once, one
delta row per statement and (queue, type), monotonic across history pruning and compaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.sql_api import claim, enqueue, expire_lease, one, rows

Conn = psycopg.Connection[Any]
KINDS = ("enqueued", "completed", "failed", "retried", "dead_lettered", "cancelled")


def counts(db: Conn) -> dict[tuple[str, str], dict[str, int]]:
    return {(r["queue"], r["type"]): {k: int(r[k]) for k in (*KINDS, "running")} for r in rows(db, "counters")}


def of(db: Conn, queue: str = "default", type: str = "test.job") -> dict[str, int]:
    return counts(db).get((queue, type), dict.fromkeys((*KINDS, "running"), 0))


def many(db: Conn, jobs: list[dict[str, Any]]) -> list[int]:
    return [r["enqueue_many"] for r in db.execute("SELECT * FROM jobqueue.enqueue_many(%s)", [Jsonb(jobs)])]


def deltas(db: Conn) -> int:
    return int(db.execute("SELECT count(*) AS n FROM jobqueue.counter_delta").fetchone()["n"])  # type: ignore[index]


def expect(db: Conn, before: dict[str, int], **changed: int) -> None:
    after = of(db)
    assert {k: after[k] - before[k] for k in KINDS} == {k: changed.get(k, 0) for k in KINDS}


def test_enqueue_paths_count_once_with_one_delta_row_per_statement(db: Conn) -> None:
    enqueue(db)
    assert of(db)["enqueued"] == 1
    n = deltas(db)
    many(db, [{"type": "test.job"}] * 40 + [{"type": "other"}] * 2)
    assert deltas(db) == n + 2  # two (queue, type) groups, 42 jobs
    db.execute("SELECT jobqueue.enqueue_batch(%s, %s)", [["test.job"] * 7, ["{}"] * 7])
    assert of(db)["enqueued"] == 48 and of(db, type="other")["enqueued"] == 2
    # a duplicate unique_key inserts nothing and counts nothing
    enqueue(db, unique_key="k")
    before = of(db)
    enqueue(db, unique_key="k")
    many(db, ([{"type": "test.job", "unique_key": "k"}]))
    expect(db, before)


def test_claim_and_heartbeat_write_no_counter_row(db: Conn) -> None:
    many(db, [{"type": "test.job"}] * 20)
    n = deltas(db)
    got = claim(db, batch=20)
    for j in got[:5]:
        rows(db, "heartbeat", j["id"], j["token"])
    assert deltas(db) == n
    assert of(db)["running"] == 20


def test_complete_and_complete_many(db: Conn) -> None:
    many(db, [{"type": "test.job"}] * 30)
    before = of(db)
    got = claim(db, batch=30)
    assert one(db, "complete", got[0]["id"], got[0]["token"]) == "completed"
    n = deltas(db)
    res = rows(db, "complete_many", [j["id"] for j in got[1:]], [j["token"] for j in got[1:]])
    assert {r["status"] for r in res} == {"completed"}
    assert deltas(db) == n + 1  # 29 completions, one row
    # a repeated acknowledgement is not a second completion
    assert one(db, "complete", got[0]["id"], got[0]["token"]) == "already_completed"
    expect(db, before, completed=30)
    row = next(r for r in rows(db, "counters") if r["type"] == "test.job")
    assert sum(row["queue_time_buckets"]) == 30 and sum(row["run_time_buckets"]) == 30
    assert len(row["run_time_buckets"]) == len(one(db, "histogram_buckets")) + 1


def test_fail_retry_dead_letter_and_cancel(db: Conn) -> None:
    enqueue(db, max_attempts=2)
    before = of(db)
    j = claim(db)[0]
    assert one(db, "fail", j["id"], j["token"], "boom") == "retrying"
    expect(db, before, failed=1, retried=1)
    assert one(db, "fail", j["id"], j["token"], "boom") == "retrying"  # repeated: not counted again
    expect(db, before, failed=1, retried=1)
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '1 s' WHERE id = %s", [j["id"]])
    j = claim(db)[0]
    assert one(db, "fail", j["id"], j["token"], "boom") == "dead_letter"
    expect(db, before, failed=2, retried=1, dead_lettered=1)
    # permanent error: dead letter at once
    enqueue(db)
    j = claim(db)[0]
    assert one(db, "fail", j["id"], j["token"], "bad", error_class="permanent") == "dead_letter"
    expect(db, before, failed=3, retried=1, dead_lettered=2, enqueued=1)
    # cancel a waiting job; fail(cancelled) of a running one
    w = enqueue(db)
    assert one(db, "cancel", w) == "cancelled"
    enqueue(db)
    j = claim(db)[0]
    assert one(db, "fail", j["id"], j["token"], "stop", error_class="cancelled") == "cancelled"
    expect(db, before, failed=3, retried=1, dead_lettered=2, enqueued=3, cancelled=2)


def test_reconcile_lease_expiry_and_ttl(db: Conn) -> None:
    for _ in range(3):
        enqueue(db, max_attempts=1)
    enqueue(db, max_attempts=5)
    before = of(db)
    got = claim(db, batch=4)
    for j in got:
        expire_lease(db, j["id"])
    one(db, "cancel", got[0]["id"])  # cancel requested while running
    summary = one(db, "reconcile")
    assert summary["leases_retried"] == 1 and summary["leases_dead_lettered"] == 2
    assert summary["leases_cancelled"] == 1
    expect(db, before, failed=3, retried=1, dead_lettered=2, cancelled=1)
    # a waiting job past expires_at is dead-lettered 'expired': not a failed attempt
    e = enqueue(db, expires_at="2999-01-01T00:00:00Z")
    db.execute("UPDATE jobqueue.job SET expires_at = now() - interval '1 s' WHERE id = %s", [e])
    one(db, "reconcile")
    expect(db, before, failed=3, retried=1, dead_lettered=3, cancelled=1, enqueued=1)


def test_redrive_counts_as_enqueued_and_the_flow_balances(db: Conn) -> None:
    for _ in range(3):
        enqueue(db, max_attempts=1)
    for j in claim(db, batch=3):
        one(db, "fail", j["id"], j["token"], "x", error_class="permanent")
    before = of(db)
    assert len(rows(db, "redrive", {})) == 3
    expect(db, before, enqueued=3)
    j = claim(db)[0]
    one(db, "complete", j["id"], j["token"])
    c = of(db)
    live = db.execute("SELECT count(*) AS n FROM jobqueue.job").fetchone()["n"]  # type: ignore[index]
    assert c["enqueued"] - c["completed"] - c["cancelled"] - c["dead_lettered"] == live == 2


def test_monotonic_across_history_pruning_and_compaction(db: Conn) -> None:
    many(db, [{"type": "test.job"}] * 10)
    got = claim(db, batch=10)
    rows(db, "complete_many", [j["id"] for j in got], [j["token"] for j in got])
    before = of(db)
    assert before["completed"] == 10
    summary = one(db, "reconcile")
    assert summary["counters_compacted"] >= 2
    assert deltas(db) == 0
    assert of(db) == before
    # history older than retention is pruned: the counters stay
    db.execute("UPDATE jobqueue.setting SET value = '1' WHERE key = 'history_retention_s'")
    db.execute("UPDATE jobqueue.job_history SET finished_at = now() - interval '1 hour'")
    assert one(db, "reconcile")["history_pruned"] == 10
    assert db.execute("SELECT count(*) AS n FROM jobqueue.job_history").fetchone()["n"] == 0  # type: ignore[index]
    assert of(db) == before


def test_rolled_back_statement_counts_nothing(db: Conn) -> None:
    before = of(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        many(db, ([{"type": "test.job"}, {"type": "test.job", "priority": 99}]))
    expect(db, before)


def test_concurrent_completions_and_reconciles_count_exactly(connect: Callable[..., Conn], db: Conn) -> None:
    n_workers, per = 4, 50
    many(db, [{"type": "test.job"}] * (n_workers * per))
    start = threading.Barrier(n_workers + 1)
    errors: list[BaseException] = []

    def work() -> None:
        conn = connect()
        try:
            start.wait()
            while got := claim(conn, batch=5):
                rows(conn, "complete_many", [j["id"] for j in got], [j["token"] for j in got])
        except BaseException as exc:
            errors.append(exc)

    def compact() -> None:
        conn = connect()
        start.wait()
        for _ in range(20):
            one(conn, "reconcile")

    threads = [threading.Thread(target=work) for _ in range(n_workers - 1)] + [threading.Thread(target=compact)]
    threads.append(threading.Thread(target=work))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    c = of(db)
    assert c["completed"] == c["enqueued"] == n_workers * per


def test_tenant_mapped_role_may_not_read_counters(
    db: Conn, login_role: Callable[[str], str], connect: Callable[..., Conn]
) -> None:
    role = login_role("jobqueue_admin")
    # mapped directly (set_tenant_role refuses while a superuser owns the schema, as here)
    db.execute("INSERT INTO jobqueue.tenant_role (role_name, tenant_id) VALUES (%s, 'acme')", [role])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="counters"):
        rows(connect(user=role), "counters")
    # an unmapped admin may
    other = login_role("jobqueue_admin")
    assert rows(connect(user=other), "counters") == []


def test_histogram_buckets_are_upper_bound_inclusive(db: Conn) -> None:
    bounds = one(db, "histogram_buckets")
    assert bounds == sorted(bounds) and len(bounds) == 16
    for value, bucket in [(0.0, 0), (0.005, 0), (0.0050001, 1), (1.0, 7), (1.0000001, 8), (3600.0, 15), (3600.5, 16)]:
        got = db.execute("SELECT jobqueue._bucket_counts(ARRAY[%s::float8]) AS b", [value]).fetchone()["b"]  # type: ignore[index]
        assert got == [1 if i == bucket else 0 for i in range(17)], value
    assert db.execute("SELECT jobqueue._bucket_counts('{}') AS b").fetchone()["b"] is None  # type: ignore[index]


def test_histogram_of_many_values_matches_a_reference(db: Conn) -> None:
    """_bucket_counts over one array (the trigger's call: every completion of a statement) as
    a plain count per bucket: each bound, either side of it, zero, huge values, repeats."""
    bounds = [float(b) for b in one(db, "histogram_buckets")]
    values = [0.0, 1e12, *bounds, *[b * 0.999999 for b in bounds], *[b * 1.000001 for b in bounds]]
    values += [i / 7.0 for i in range(500)] + [0.25] * 5

    def bucket(v: float) -> int:
        return sum(1 for b in bounds if b < v)  # le: a value equal to a bound is in its bucket

    want = [sum(1 for v in values if bucket(v) == i) for i in range(len(bounds) + 1)]
    got = db.execute("SELECT jobqueue._bucket_counts(%s::float8[]) AS b", [values]).fetchone()["b"]  # type: ignore[index]
    assert got == want and sum(got) == len(values)
