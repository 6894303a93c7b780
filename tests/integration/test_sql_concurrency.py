"""Claiming under concurrency, with several real connections (RELIABILITY.md 4.3).

CLAIM-01 no double claim, CLAIM-02 eligibility and order, CLAIM-03 forced plans,
CLAIM-05 unique-key race, PLAN-01 the claim uses its partial index.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.plans import explained, nodes

pytestmark = pytest.mark.timeout(300)

Connect = Callable[..., psycopg.Connection[Any]]


def enqueue_bulk(db: psycopg.Connection[Any], n: int, queue: str = "default", **extra: Any) -> None:
    jobs = [{"type": "t", "payload": {"i": i}, "queue": queue, **extra} for i in range(n)]
    db.execute("SELECT count(*) FROM jobqueue.enqueue_many(%s::jsonb)", (json.dumps(jobs),))


def claimers(
    connect: Connect, workers: int, setup: Callable[[psycopg.Connection[Any]], None] | None = None
) -> tuple[Counter[int], list[tuple[int, int]], list[BaseException]]:
    """`workers` connections claim random batches of 1..10 and complete at once, until empty."""
    claimed: Counter[int] = Counter()
    batches: list[tuple[int, int]] = []  # (asked, got)
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)
    conns = [connect() for _ in range(workers)]

    def run(conn: psycopg.Connection[Any], seed: int) -> None:
        rng = random.Random(seed)
        try:
            if setup:
                setup(conn)
            barrier.wait()
            empty = 0
            while empty < 3:
                n = rng.randint(1, 10)
                rows = conn.execute(
                    "SELECT id, token FROM jobqueue.claim(ARRAY['default'], %s, %s)", (f"w{seed}", n)
                ).fetchall()
                with lock:
                    batches.append((n, len(rows)))
                    claimed.update(row["id"] for row in rows)
                if not rows:
                    empty += 1
                    continue
                empty = 0
                done = conn.execute(
                    "SELECT status FROM jobqueue.complete_many(%s, %s)",
                    ([r["id"] for r in rows], [r["token"] for r in rows]),
                ).fetchall()
                assert all(d["status"] == "completed" for d in done), done
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(conn, i)) for i, conn in enumerate(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return claimed, batches, errors


def test_no_double_claim_concurrent(db: psycopg.Connection[Any], connect: Connect) -> None:
    """CLAIM-01: 20,000 jobs, 64 claimers: every job claimed exactly once, batches within their limit."""
    enqueue_bulk(db, 20_000)
    claimed, batches, errors = claimers(connect, 64)
    assert errors == []
    assert len(claimed) == 20_000 and set(claimed.values()) == {1}
    assert all(got <= asked for asked, got in batches)
    row = db.execute("SELECT count(*) AS n FROM jobqueue.jobs WHERE state = 'completed'").fetchone()
    assert row is not None and row["n"] == 20_000
    # Every claim wrote one event; no job was leased twice.
    leases = db.execute(
        "SELECT job_id, count(*) AS n FROM jobqueue.job_event WHERE to_state = 'processing' "
        "GROUP BY job_id HAVING count(*) > 1"
    ).fetchall()
    assert leases == []


PLAN_KNOBS = [
    "enable_hashjoin",
    "enable_mergejoin",
    "enable_hashagg",
    "enable_material",
    "enable_indexscan",
    "enable_bitmapscan",
    "enable_nestloop",
    "enable_seqscan",
]


@pytest.mark.parametrize(
    "off",
    [
        (),
        ("enable_indexscan", "enable_bitmapscan"),
        ("enable_seqscan",),
        ("enable_hashjoin", "enable_mergejoin"),
        ("enable_nestloop",),
        ("enable_material", "enable_hashagg", "enable_indexscan"),
    ],
)
def test_claim_limit_under_forced_plans(db: psycopg.Connection[Any], connect: Connect, off: tuple[str, ...]) -> None:
    """CLAIM-03: under odd plans a claim never leases more than asked, nor beyond max_attempts."""
    enqueue_bulk(db, 1_000, max_attempts=1)

    def setup(conn: psycopg.Connection[Any]) -> None:
        for knob in off:
            assert knob in PLAN_KNOBS
            conn.execute(f"SET {knob} = off")

    claimed, batches, errors = claimers(connect, 8, setup)
    assert errors == []
    assert all(got <= asked for asked, got in batches)
    assert len(claimed) == 1_000 and set(claimed.values()) == {1}
    row = db.execute("SELECT count(*) AS n FROM jobqueue.jobs WHERE attempt > max_attempts").fetchone()
    assert row is not None and row["n"] == 0


job_specs = st.lists(
    st.tuples(st.integers(0, 10), st.integers(-3600, 3600), st.sampled_from(["pending", "retrying", "processing"])),
    min_size=1,
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=job_specs, batch=st.integers(1, 30))
def test_claim_eligibility_and_order(
    db: psycopg.Connection[Any], specs: list[tuple[int, int, str]], batch: int
) -> None:
    """CLAIM-02: only runnable jobs, in (priority desc, run_at, id) order, at most `batch`."""
    db.execute("DELETE FROM jobqueue.job")
    ids = []
    for priority, _offset, _state in specs:
        ids.append(db.execute("SELECT jobqueue.enqueue('t', '{}', priority => %s) AS id", (priority,)).fetchone()["id"])  # type: ignore[index]
    for job_id, (_priority, offset, state) in zip(ids, specs, strict=True):
        db.execute(
            "UPDATE jobqueue.job SET run_at = now() + make_interval(secs => %s), state = %s::jobqueue.job_state,"
            " token = CASE WHEN %s = 'processing' THEN nextval('jobqueue.lease_token_seq') END,"
            " lease_expires_at = CASE WHEN %s = 'processing' THEN now() + interval '1 hour' END WHERE id = %s",
            (offset, state, state, state, job_id),
        )
    expected_rows = db.execute(
        "SELECT id FROM jobqueue.job WHERE state IN ('pending', 'retrying') AND run_at <= now() "
        "ORDER BY priority DESC, run_at, id LIMIT %s",
        (batch,),
    ).fetchall()
    got = db.execute("SELECT id FROM jobqueue.claim(ARRAY['default'], 'w', %s)", (batch,)).fetchall()
    assert [r["id"] for r in got] == [r["id"] for r in expected_rows]


def test_unique_key_race(db: psycopg.Connection[Any], connect: Connect) -> None:
    """CLAIM-05: 50 concurrent enqueues with one unique key: one row, one id for everyone."""
    conns = [connect() for _ in range(50)]
    barrier = threading.Barrier(50)
    results: list[int] = []
    errors: list[BaseException] = []

    def run(conn: psycopg.Connection[Any], i: int) -> None:
        try:
            barrier.wait()
            row = conn.execute(
                "SELECT jobqueue.enqueue('t', %s::jsonb, unique_key => 'the-key') AS id", (json.dumps({"caller": i}),)
            ).fetchone()
            assert row is not None
            results.append(row["id"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(conn, i)) for i, conn in enumerate(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 50 and len(set(results)) == 1
    row = db.execute("SELECT count(*) AS n FROM jobqueue.jobs WHERE unique_key = 'the-key'").fetchone()
    assert row is not None and row["n"] == 1


def test_claim_plan_uses_partial_index(db: psycopg.Connection[Any]) -> None:
    """PLAN-01: with 50k waiting and 200k finished jobs, claim is an ordered scan of its partial index."""
    enqueue_bulk(db, 50_000)
    db.execute(
        "INSERT INTO jobqueue.job_history (id, queue, type, payload, state, max_attempts, finished_at) "
        "SELECT nextval('jobqueue.job_id_seq'), 'default', 't', '{}', 'completed', 5, now() - interval '1 hour' "
        "FROM generate_series(1, 200000)"
    )
    db.execute("ANALYZE jobqueue.job")
    db.execute("ANALYZE jobqueue.job_history")
    with explained(db) as plans:
        rows = db.execute("SELECT id FROM jobqueue.claim(ARRAY['default'], 'w', 10)").fetchall()
    assert len(rows) == 10
    every = [node for plan in plans for node in nodes(plan["Plan"])]
    on_job = [n for n in every if n.get("Relation Name") == "job"]
    assert on_job, f"no plan touching jobqueue.job among {len(plans)} plans"
    assert any(
        n["Node Type"] in ("Index Scan", "Index Only Scan") and n.get("Index Name") == "job_claim_idx" for n in on_job
    ), [(n["Node Type"], n.get("Index Name")) for n in on_job]
    assert not any(n["Node Type"] == "Seq Scan" for n in on_job)
    assert not any(n.get("Relation Name", "").startswith("job_history") for n in every)
