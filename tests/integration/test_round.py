"""The worker's round in one libpq pipeline (jobqueue/round.py) against the real database:
rows as the cursor gives them, acknowledgement and claim committed together or not at
all, the database's errors as psycopg's classes (the connection idle after them), a lost
connection closed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import tuple_row

from jobqueue.round import run_round
from jobqueue.sql import query
from tests.support.sql_api import claim_one, enqueue

ACK = query("worker_round_ack").encode()
CLAIM = query("worker_round_claim").encode()
ACK_NAMES = ("ids", "tokens", "outputs")
CLAIM_NAMES = ("queues", "worker_id", "batch", "visibility_timeout", "types")


def claim_params(queue: str, batch: int = 10, **kw: Any) -> dict[str, Any]:
    return {"queues": [queue], "worker_id": "w-round", "batch": batch, "visibility_timeout": None, "types": None, **kw}


def state(db: psycopg.Connection[Any], job_id: int) -> str:
    row = db.execute("SELECT state::text AS s FROM jobqueue.jobs WHERE id = %s", [job_id]).fetchone()
    assert row is not None
    return str(row["s"])


def test_a_round_acknowledges_and_claims_with_the_cursors_types(db: psycopg.Connection[Any], connect: Any) -> None:
    first = enqueue(db, "round.a", queue="round", payload={"n": 1, "s": 'quote " and \\ back'})
    done = claim_one(db, ["round"])
    second = enqueue(db, "round.b", queue="round", payload={"k": [1, 2]}, visibility_timeout=timedelta(seconds=7))
    conn = connect()
    acks, rows = run_round(conn, [
        (ACK, ACK_NAMES, {"ids": [first], "tokens": [done["token"]], "outputs": ['{"ok": "é \\" x"}']}),
        (CLAIM, CLAIM_NAMES, claim_params("round")),
    ])  # fmt: skip
    assert acks == [(first, "completed")] and not conn.closed
    assert state(db, first) == "completed" and state(db, second) == "processing"
    output = db.execute("SELECT output FROM jobqueue.jobs WHERE id = %s", [first]).fetchone()
    assert output is not None and output["output"] == {"ok": 'é " x'}
    # the same row through psycopg's cursor, as the worker read it before
    [row] = rows
    db.execute("UPDATE jobqueue.job SET state = 'pending', token = NULL, lease_expires_at = NULL WHERE id = %s",
               [second])  # fmt: skip
    cursor_row = conn.cursor(row_factory=tuple_row).execute(query("claim"), claim_params("round")).fetchone()
    assert cursor_row is not None
    same = [i for i in range(len(row)) if i not in (1, 6, 9)]  # token, attempt and lease expiry: per claim
    assert [row[i] for i in same] == [cursor_row[i] for i in same]
    assert [type(v) for v in row] == [type(v) for v in cursor_row]
    assert row[4] == {"k": [1, 2]} and row[11] == timedelta(seconds=7)


def test_an_error_in_the_claim_rolls_back_the_acknowledgement_too(db: psycopg.Connection[Any], connect: Any) -> None:
    job = enqueue(db, "round.c", queue="round-err")
    held = claim_one(db, ["round-err"])
    conn = connect()
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        run_round(conn, [
            (ACK, ACK_NAMES, {"ids": [job], "tokens": [held["token"]], "outputs": [None]}),
            (CLAIM, CLAIM_NAMES, claim_params("round-err", batch=0)),
        ])  # fmt: skip
    assert "batch" in str(caught.value)
    assert state(db, job) == "processing"  # the completion was not committed
    # the pipeline was read to its Sync: the connection is idle and serves the next round
    assert not conn.closed and conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    [acks] = run_round(conn, [(ACK, ACK_NAMES, {"ids": [job], "tokens": [held["token"]], "outputs": [None]})])
    assert acks == [(job, "completed")]


def test_a_lost_connection_raises_operational_error(db: psycopg.Connection[Any], connect: Any) -> None:
    conn = connect()
    pid = conn.info.backend_pid
    db.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(psycopg.OperationalError):
        run_round(conn, [(CLAIM, CLAIM_NAMES, claim_params("round-lost"))])
    assert conn.closed
