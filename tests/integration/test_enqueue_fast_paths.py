"""The lean enqueue paths agree with the general one.

``jobqueue.enqueue`` sends a plain job (no unique key, dependencies, policy, TTL, tags,
metadata or per-job lease) down a one-INSERT path, and ``jobqueue.enqueue_batch`` loads
plain jobs given as arrays (the library's COPY path). Both must check what the general
set-based core (``jobqueue._enqueue``) checks, with the same SQLSTATE and message, write
the same rows, and change nothing when they refuse.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from jobqueue.client import JobQueue
from jobqueue.errors import InvalidInput
from tests.support.sql_api import counts, one, snapshot, transitions

Conn = psycopg.Connection[Any]

FAR = datetime(2999, 1, 1, tzinfo=UTC)

#: (enqueue arguments, the field the error must name); each is refused by both paths.
BAD_SINGLE: list[tuple[dict[str, Any], str]] = [
    ({"type": ""}, "type"),
    ({"type": "x" * 256}, "type"),
    ({"type": "a\nb"}, "type"),
    ({"type": "t", "payload": Jsonb([1])}, "payload"),
    ({"type": "t", "payload": Jsonb("s")}, "payload"),
    ({"type": "t", "payload": None}, "payload"),
    ({"type": "t", "payload": Jsonb(None)}, "payload"),
    ({"type": "t", "queue": ""}, "queue"),
    ({"type": "t", "queue": "a b"}, "queue"),
    ({"type": "t", "queue": "q" * 129}, "queue"),
    ({"type": "t", "priority": 11}, "priority"),
    ({"type": "t", "priority": "urgent"}, "priority"),
    ({"type": "t", "run_at": FAR}, "run_at"),
    ({"type": "t", "run_at": datetime.now(UTC), "delay": timedelta(seconds=1)}, "run_at"),
    ({"type": "t", "delay": timedelta(seconds=-1)}, "delay"),
    ({"type": "t", "delay": timedelta(days=3650)}, "delay"),
    ({"type": "t", "max_attempts": 0}, "max_attempts"),
    ({"type": "t", "max_attempts": 1001}, "max_attempts"),
    ({"type": "t", "tenant_id": "t" * 256}, "tenant_id"),
    ({"type": "t", "user_id": "u" * 256}, "user_id"),
]


def _error(db: Conn, query: str, params: list[Any]) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        db.execute(query, params)
    return info.value


@pytest.mark.parametrize(("args", "field"), BAD_SINGLE, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_SINGLE)])
def test_fast_enqueue_refuses_like_the_general_path(db: Conn, args: dict[str, Any], field: str) -> None:
    before = snapshot(db)
    names = list(args)
    call = ", ".join(f"{name} => %s" for name in names)
    fast = _error(db, f"SELECT jobqueue.enqueue({call})", list(args.values()))
    # the same job through the general core: an empty metadata object is a harmless option
    # that the lean path leaves to _enqueue
    general = _error(db, f"SELECT jobqueue.enqueue({call}, metadata => '{{}}')", list(args.values()))
    assert fast.diag.column_name == field == general.diag.column_name
    assert fast.sqlstate == general.sqlstate
    assert fast.diag.message_primary == general.diag.message_primary
    assert str(fast.diag.message_primary).startswith(f"{field}: ")
    assert snapshot(db) == before


def test_fast_enqueue_writes_what_the_general_path_writes(db: Conn) -> None:
    db.execute("SELECT jobqueue.configure_queue('fastq', '{\"max_attempts\": 7}')")
    args = {"type": "t", "payload": Jsonb({"k": [1, 2]}), "queue": "fastq", "priority": "high",
            "delay": timedelta(seconds=30), "tenant_id": "acme", "user_id": "u1"}
    call = ", ".join(f"{name} => %s" for name in args)
    fast_id = db.execute(f"SELECT jobqueue.enqueue({call}) AS id", list(args.values())).fetchone()["id"]
    slow_id = db.execute(f"SELECT jobqueue.enqueue({call}, metadata => '{{}}') AS id",
                         list(args.values())).fetchone()["id"]
    columns = ("queue", "type", "payload", "state", "priority", "base_priority", "attempt", "max_attempts",
               "tenant_id", "user_id", "waiting_on", "created_by")
    fast, slow = (
        db.execute("SELECT *, run_at - created_at AS wait FROM jobqueue.job WHERE id = %s", [i]).fetchone()
        for i in (fast_id, slow_id)
    )
    assert {c: fast[c] for c in columns} == {c: slow[c] for c in columns}
    assert fast["max_attempts"] == 7 and fast["priority"] == 8
    assert abs(fast["wait"] - timedelta(seconds=30)) < timedelta(seconds=1)
    assert transitions(db, fast_id) == transitions(db, slow_id) == [(None, "pending")]


def test_fast_enqueue_creates_the_queue_and_notifies_only_runnable_open_queues(db: Conn, connect: Any) -> None:
    listener = connect()
    listener.execute("LISTEN jobqueue")
    db.execute("SELECT jobqueue.enqueue('t', queue => 'brand-new')")
    assert db.execute("SELECT count(*) AS n FROM jobqueue.queue WHERE name = 'brand-new'").fetchone()["n"] == 1
    db.execute("SELECT jobqueue.enqueue('t', queue => 'later', delay => '1 hour')")
    db.execute("SELECT jobqueue.pause_queue('held')")
    db.execute("SELECT jobqueue.enqueue('t', queue => 'held')")
    got = [n.payload for n in listener.notifies(timeout=0.5)]
    assert got == ["brand-new"]


def test_fast_enqueue_honours_max_size(db: Conn) -> None:
    db.execute("SELECT jobqueue.configure_queue('small', '{\"max_size\": 2}')")
    one(db, "enqueue", "t", queue="small")
    one(db, "enqueue", "t", queue="small")
    before = counts(db)
    with pytest.raises(psycopg.Error) as info:
        one(db, "enqueue", "t", queue="small")
    assert info.value.sqlstate == "53400" and info.value.diag.column_name == "queue"
    assert counts(db) == before


# -- enqueue_batch ---------------------------------------------------------------------------


def batch(db: Conn, types: Any, payloads: Any, **kwargs: Any) -> list[int]:
    names = "".join(f", {name} => %s" for name in kwargs)
    rows = db.execute(
        f"SELECT id FROM jobqueue.enqueue_batch(%s::text[], %s::jsonb[]{names}) AS id",
        [types, payloads, *kwargs.values()],
    ).fetchall()
    return [row["id"] for row in rows]


def test_enqueue_batch_in_order_with_defaults(db: Conn) -> None:
    db.execute("SELECT jobqueue.set_retry_policy('typed', '{\"max_attempts\": 4}')")
    ids = batch(db, ["a", "typed", "c"], [Jsonb({"n": 0}), Jsonb({}), Jsonb({"n": 2})],
                queues=["q1", None, "q1"], priorities=[1, None, 10], max_attempts=[3, None, None])
    assert ids == sorted(ids) and len(ids) == 3
    got = db.execute(
        "SELECT id, type, payload, queue, priority, max_attempts, state::text FROM jobqueue.job WHERE id = ANY(%s)"
        " ORDER BY id", [ids]).fetchall()
    assert [(r["type"], r["payload"], r["queue"], r["priority"], r["max_attempts"]) for r in got] == [
        ("a", {"n": 0}, "q1", 1, 3), ("typed", {}, "default", 5, 4), ("c", {"n": 2}, "q1", 10, 25)]
    assert all(transitions(db, i) == [(None, "pending")] for i in ids)


#: An empty payload (a NULL element is refused: a payload is an object).
E = Jsonb({})

BAD_BATCH: list[tuple[dict[str, Any], str, str]] = [
    ({"types": [], "payloads": []}, "types", "types: must be a non-empty array"),
    ({"types": None, "payloads": None}, "types", "types: must be a non-empty array"),
    ({"types": ["a", "b"], "payloads": [E]}, "payloads", "payloads: must hold one payload per type"),
    ({"types": ["a"], "payloads": [E], "queues": ["x", "y"]}, "queues", "queues: must hold one queue"),
    ({"types": ["a"], "payloads": [E], "priorities": [1, 2]}, "priorities", "priorities: must hold one"),
    ({"types": ["a"], "payloads": [E], "max_attempts": [1, 2]}, "max_attempts", "max_attempts: must hold"),
    ({"types": ["a", ""], "payloads": [E, E]}, "type", "jobs[1].type: must be a non-empty string"),
    ({"types": ["a", "b"], "payloads": [E, Jsonb([1])]}, "payload", "jobs[1].payload: must be a JSON object"),
    ({"types": ["a", "b"], "payloads": [E, E], "queues": ["ok", "no way"]}, "queue", "jobs[1].queue: must be"),
    ({"types": ["a", "b"], "payloads": [E, E], "priorities": [5, -1]}, "priority", "jobs[1].priority: must"),
    ({"types": ["a", "b"], "payloads": [E, E], "max_attempts": [0, 1]}, "max_attempts",
     "jobs[0].max_attempts: must be an integer between 1 and 1000"),
]


@pytest.mark.parametrize(("args", "field", "message"), BAD_BATCH, ids=[m for _, _, m in BAD_BATCH])
def test_enqueue_batch_refuses_by_field_and_changes_nothing(
    db: Conn, args: dict[str, Any], field: str, message: str
) -> None:
    before = snapshot(db)
    types, payloads = args.pop("types"), args.pop("payloads")
    with pytest.raises(psycopg.Error) as info:
        batch(db, types, payloads, **args)
    assert info.value.sqlstate == "22023"
    assert info.value.diag.column_name == field
    assert str(info.value.diag.message_primary).startswith(message)
    assert snapshot(db) == before


def test_enqueue_batch_payload_cap_names_the_element(db: Conn) -> None:
    db.execute("UPDATE jobqueue.setting SET value = '100' WHERE key = 'max_payload_bytes'")
    before = snapshot(db)
    with pytest.raises(psycopg.Error) as info:
        batch(db, ["a", "b"], [Jsonb({}), Jsonb({"x": "y" * 500})])
    assert info.value.sqlstate == "22001"
    assert str(info.value.diag.message_primary) == "jobs[1].payload: larger than 100 bytes"
    assert snapshot(db) == before


def test_producer_may_call_enqueue_batch(db: Conn, connect: Any, login_role: Any) -> None:
    producer = connect(user=login_role("jobqueue_producer"))
    ids = [r["id"] for r in producer.execute(
        "SELECT id FROM jobqueue.enqueue_batch(ARRAY['a','b'], ARRAY['{}'::jsonb, '{}'::jsonb]) AS id").fetchall()]
    assert len(ids) == 2
    actors = {r["created_by"] for r in db.execute("SELECT created_by FROM jobqueue.job WHERE id = ANY(%s)",
                                                  [ids]).fetchall()}
    assert actors == {producer.info.user}


# -- the library's COPY path -------------------------------------------------------------------


def test_library_copy_path_plain_and_general_jobs_agree(db_url: str, db: Conn) -> None:
    with JobQueue(db_url, pool_size=2) as jq:
        plain = jq.enqueue_many([{"type": "p", "payload": {"n": i}, "priority": i % 11} for i in range(1500)])
        # a delay is not plain: the same jobs go the general COPY path
        general = jq.enqueue_many(
            [{"type": "p", "payload": {"n": i}, "priority": i % 11, "delay": 0} for i in range(1500)]
        )
        assert len(plain) == len(general) == 1500
        assert plain == sorted(plain) and general == sorted(general)
        for a, b in ((plain[0], general[0]), (plain[777], general[777])):
            ja, jb = jq.get(a), jq.get(b)
            assert (ja.payload, ja.priority, ja.max_attempts) == (jb.payload, jb.priority, jb.max_attempts)
        before = counts(db)
        bad = [{"type": "p", "payload": {"n": i}} for i in range(1200)]
        bad[1100]["queue"] = "bad queue"
        with pytest.raises(InvalidInput) as info:
            jq.enqueue_many(bad)
        assert str(info.value).startswith("jobs[1100].queue:")
        assert counts(db) == before


def test_enqueue_batch_into_a_capped_queue_is_exact_and_all_or_nothing(db: Conn) -> None:
    db.execute("SELECT jobqueue.configure_queue('capped', '{\"max_size\": 3}')")
    assert len(batch(db, ["a", "b"], [E, E], queues=["capped", "capped"])) == 2
    before = snapshot(db)
    with pytest.raises(psycopg.Error) as info:
        batch(db, ["c", "d", "e"], [E, E, E], queues=["capped", "other", "capped"])
    assert info.value.sqlstate == "53400" and info.value.diag.column_name == "queue"
    assert snapshot(db) == before
    assert len(batch(db, ["f", "g"], [E, E], queues=["capped", "other"])) == 2
