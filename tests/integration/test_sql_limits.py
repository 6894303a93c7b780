"""Issue 12 (items 1, 2, 5): what a job may carry in and out, and when it may run.

* outputs are capped (``max_output_bytes``: the queue's, else the setting, 1 MiB): an
  oversized output is not stored; the job is dead-lettered with reason and error class
  ``output_too_large`` and the acknowledgement answers ``output_too_large``;
* a ``run_at`` in the past means "now": it neither puts a job ahead of earlier ones of its
  priority nor lets priority aging count from the past;
* a payload is a JSON object: SQL NULL and JSON ``null`` are refused naming ``payload``,
  by every way in; leaving the payload out still gives ``{}``.

Time is moved by editing rows as the owner, never by waiting.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from jobqueue import JobQueue, JobState, WorkerConfig
from tests.support.cli import run_cli
from tests.support.sql_api import claim, claim_one, enqueue, job, one, rows, snapshot, transitions

pytestmark = pytest.mark.timeout(120)

Conn = psycopg.Connection[Any]

LONG_AGO = datetime(1900, 1, 1, tzinfo=UTC)


# -- item 1: outputs -----------------------------------------------------------------------------


def test_oversized_output_is_refused_and_the_job_dead_lettered(db: Conn) -> None:
    """complete with an output over the queue's max_output_bytes stores nothing of it: the job
    is a dead letter (reason output_too_large) whose last error says why; a repeat answers the
    same and changes nothing; its dependents are cancelled."""
    settings = one(db, "configure_queue", "outq", {"max_output_bytes": 100})
    assert settings["max_output_bytes"] == 100
    big = enqueue(db, queue="outq")
    dependent = enqueue(db, queue="outq", depends_on=[big])
    token = claim_one(db, ["outq"], worker_id="w-big")["token"]
    output = {"x": "y" * 500}
    assert one(db, "complete", big, token, output) == "output_too_large"
    row = job(db, big)
    assert row["state"] == "dead_letter" and row["reason"] == "output_too_large" and row["output"] is None
    last = row["errors"][-1]
    assert last["error_class"] == "output_too_large" and last["token"] == token
    assert last["outcome"] == "dead_letter" and last["source"] == "worker" and last["worker_id"] == "w-big"
    assert last["message"].startswith("output: larger than 100 bytes")
    assert str(len(json.dumps(output, separators=(", ", ": ")))) in last["message"]
    assert transitions(db, big)[-1] == ("processing", "dead_letter")
    assert job(db, dependent)["state"] == "cancelled" and job(db, dependent)["reason"] == "dependency_failed"
    # a repeated acknowledgement (say, after a dropped connection) answers the first outcome
    before = snapshot(db)
    assert one(db, "complete", big, token, output) == "output_too_large"
    assert one(db, "complete", big, token, {"small": 1}) == "output_too_large"
    assert rows(db, "complete_many", [big], [token], [Jsonb(output)]) == [{"id": big, "status": "output_too_large"}]
    assert one(db, "complete", big, token + 1) == "lease_lost"
    assert snapshot(db) == before
    # a small output on the same queue completes as before
    small = enqueue(db, queue="outq")
    token = claim_one(db, ["outq"])["token"]
    assert one(db, "complete", small, token, {"ok": True}) == "completed"
    assert job(db, small)["output"] == {"ok": True}


def test_complete_many_refuses_only_the_oversized_outputs(db: Conn) -> None:
    one(db, "configure_queue", "outm", {"max_output_bytes": 64})
    a, b, c = (enqueue(db, str(i), queue="outm") for i in range(3))
    leased = {r["id"]: r["token"] for r in claim(db, ["outm"], batch=3)}
    got = rows(db, "complete_many", [a, b, c], [leased[a], leased[b], leased[c]],
               [Jsonb({"n": 1}), Jsonb(["z" * 100]), None])
    assert got == [{"id": a, "status": "completed"}, {"id": b, "status": "output_too_large"},
                   {"id": c, "status": "completed"}]
    assert [job(db, i)["state"] for i in (a, b, c)] == ["completed", "dead_letter", "completed"]
    assert job(db, a)["output"] == {"n": 1} and job(db, b)["output"] is None


def test_default_output_cap_is_one_mib_and_per_queue_overrides_it(db: Conn) -> None:
    """No queue setting: the setting max_output_bytes (1 MiB of JSON text) applies; a queue may
    raise it (up to 16 MiB) or lower it; null clears it back to the default."""
    fits, over = "x" * (1048576 - 2), "x" * (1048576 - 1)  # JSON text: the string plus its quotes
    a, b = enqueue(db), enqueue(db)
    leased = {r["id"]: r["token"] for r in claim(db, batch=2)}
    assert one(db, "complete", a, leased[a], Jsonb(fits)) == "completed"
    assert one(db, "complete", b, leased[b], Jsonb(over)) == "output_too_large"
    assert job(db, a)["output"] == fits and job(db, b)["output"] is None
    assert db.execute("SELECT value FROM jobqueue.setting WHERE key = 'max_output_bytes'").fetchone() == {
        "value": 1048576}
    one(db, "configure_queue", "roomy", {"max_output_bytes": 2 * 1048576})
    c = enqueue(db, queue="roomy")
    assert one(db, "complete", c, claim_one(db, ["roomy"])["token"], Jsonb(over)) == "completed"
    assert one(db, "configure_queue", "roomy", {"max_output_bytes": None})["max_output_bytes"] is None
    d = enqueue(db, queue="roomy")
    assert one(db, "complete", d, claim_one(db, ["roomy"])["token"], Jsonb(over)) == "output_too_large"


@pytest.mark.parametrize("value", [0, -1, 16777217, 1.5, "big", True, [1]])
def test_bad_max_output_bytes_names_the_key_and_changes_nothing(db: Conn, value: Any) -> None:
    one(db, "configure_queue", "cfg", {"max_output_bytes": 500})
    before = snapshot(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        one(db, "configure_queue", "cfg", {"max_output_bytes": value, "max_size": 3})
    assert err.value.diag.column_name == "max_output_bytes"
    assert str(err.value.diag.message_primary).startswith("max_output_bytes: must be an integer between 1 and")
    assert snapshot(db) == before


@pytest.mark.parametrize("output", [{"a": 1}, [1, "two"], "text", 42, 1.5, True, False, None])
def test_an_output_may_be_any_json_value(db: Conn, output: Any) -> None:
    """Objects, arrays, strings, numbers, booleans and null are all outputs (docs/sql-api.md)."""
    job_id = enqueue(db)
    assert one(db, "complete", job_id, claim_one(db)["token"], Jsonb(output)) == "completed"
    assert job(db, job_id)["output"] == output


def test_worker_dead_letters_an_oversized_handler_result_without_crashing(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The Python worker sends the handler's result; the database refuses it; the worker keeps
    going (exit 0), logs one error naming the job, and the job says why."""
    jq = JobQueue(db_url, pool_size=4)
    try:
        jq.configure_queue("outw", max_output_bytes=1000)

        @jq.task(name="big.result", queue="outw")
        def big_result() -> str:
            return "z" * 5000

        @jq.task(name="small.result", queue="outw")
        def small_result() -> dict[str, int]:
            return {"n": 1}

        big, small = big_result.enqueue(), small_result.enqueue()
        config = WorkerConfig(queues=("outw",), burst=True, install_signal_handlers=False, poll_interval_s=0.05,
                              reconcile_interval_s=0)
        with caplog.at_level(logging.ERROR, logger="jobqueue.worker"):
            assert jq.run_worker(config) == 0
        refused = [r for r in caplog.records if getattr(r, "action", None) == "output_too_large"]
        assert [getattr(r, "job_id", None) for r in refused] == [big]
        dead = jq.get(big)
        assert dead.state is JobState.DEAD_LETTER and dead.reason == "output_too_large" and dead.output is None
        assert dead.errors[-1]["error_class"] == "output_too_large"
        assert jq.get(small).state is JobState.COMPLETED and jq.get(small).output == {"n": 1}
    finally:
        jq.close()


# -- item 2: a past run_at means now -------------------------------------------------------------


def _run_at_is_enqueue_time(db: Conn, job_id: int) -> None:
    row = db.execute("SELECT run_at, created_at FROM jobqueue.job WHERE id = %s", [job_id]).fetchone()
    assert row is not None and row["run_at"] == row["created_at"], row


@pytest.mark.parametrize("path", ["lean", "general", "many"])
def test_past_run_at_does_not_jump_the_queue_even_with_aging(db: Conn, path: str) -> None:
    """A low job enqueued with run_at 1900 neither overtakes an earlier job of its priority nor
    gets aged to 10 ahead of a critical one: its run time is its enqueue time."""
    one(db, "configure_queue", "aq", {"aging_interval": 60})
    first_low = enqueue(db, queue="aq", priority="low")
    critical = enqueue(db, queue="aq", priority="critical")
    if path == "many":
        jumper = one(db, "enqueue_many", Jsonb([{"type": "t", "queue": "aq", "priority": "low",
                                                 "run_at": LONG_AGO.isoformat()}]))
    elif path == "general":  # metadata sends it through the set-based core
        jumper = enqueue(db, queue="aq", priority="low", run_at=LONG_AGO, metadata={})
    else:
        jumper = enqueue(db, queue="aq", priority="low", run_at=LONG_AGO)
    one(db, "reconcile")
    assert [r["id"] for r in claim(db, ["aq"], batch=3)] == [critical, first_low, jumper]
    assert job(db, jumper)["priority"] == 0
    _run_at_is_enqueue_time(db, jumper)


def test_aging_counts_from_the_enqueue_time(db: Conn) -> None:
    """Aging still works: a job that really waited 5.5 intervals gains 5, whatever run_at it gave."""
    one(db, "configure_queue", "aq2", {"aging_interval": 60})
    old = enqueue(db, queue="aq2", priority=0, run_at=LONG_AGO)
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '5 minutes 30 seconds', "
               "created_at = now() - interval '5 minutes 30 seconds' WHERE id = %s", [old])
    assert one(db, "reconcile")["aged"] == 1
    assert job(db, old)["priority"] == 5


def test_library_and_cli_past_run_at_mean_now(db: Conn, db_url: str) -> None:

    jq = JobQueue(db_url, pool_size=2)
    try:
        lib = jq.enqueue("t", {}, run_at=LONG_AGO)
        many = jq.enqueue_many([{"type": "t", "run_at": LONG_AGO}])[0]
    finally:
        jq.close()
    proc = run_cli("enqueue", "t", "--run-at", "1900-01-01T00:00:00Z", database_url=db_url, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cli = int(proc.stdout.strip())
    for job_id in (lib, many, cli):
        _run_at_is_enqueue_time(db, job_id)


def test_a_future_run_at_is_kept(db: Conn) -> None:
    at = datetime.now(UTC) + timedelta(hours=2)
    job_id = enqueue(db, run_at=at)
    assert abs((job(db, job_id)["run_at"] - at).total_seconds()) < 0.001


# -- item 5: a payload is a JSON object, never null -----------------------------------------------


NULL_PAYLOADS: list[tuple[str, str, list[Any], str]] = [
    ("enqueue-sql-null", "SELECT jobqueue.enqueue('t', NULL)", [], "payload"),
    ("enqueue-named-sql-null", "SELECT jobqueue.enqueue(type => 't', payload => NULL)", [], "payload"),
    ("enqueue-json-null", "SELECT jobqueue.enqueue('t', 'null'::jsonb)", [], "payload"),
    ("enqueue-general-sql-null", "SELECT jobqueue.enqueue('t', NULL, metadata => '{}')", [], "payload"),
    ("enqueue-general-json-null", "SELECT jobqueue.enqueue('t', 'null', unique_key => 'k')", [], "payload"),
    ("enqueue-many-json-null", "SELECT jobqueue.enqueue_many(%s)",
     [Jsonb([{"type": "t"}, {"type": "t", "payload": None}])], "jobs[1].payload"),
    ("enqueue-batch-sql-null", "SELECT jobqueue.enqueue_batch(ARRAY['t', 't'], ARRAY['{}', NULL]::jsonb[])", [],
     "jobs[1].payload"),
    ("enqueue-batch-json-null", "SELECT jobqueue.enqueue_batch(ARRAY['t'], ARRAY['null']::jsonb[])", [],
     "jobs[0].payload"),
]


@pytest.mark.parametrize(("statement", "params", "label"), [p[1:] for p in NULL_PAYLOADS],
                         ids=[p[0] for p in NULL_PAYLOADS])
def test_null_payload_is_refused_naming_the_field(db: Conn, statement: str, params: list[Any], label: str) -> None:
    before = snapshot(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute(statement, params)
    assert err.value.diag.column_name == "payload"
    assert err.value.diag.message_primary == f"{label}: must be a JSON object, not null"
    assert snapshot(db) == before


def test_a_left_out_payload_is_still_an_empty_object(db: Conn, db_url: str) -> None:
    """Leaving the payload out (SQL default, absent key, the library's payload=None) gives {}."""
    ids = [
        one(db, "enqueue", "t"),
        one(db, "enqueue", "t", metadata={}),
        one(db, "enqueue_many", Jsonb([{"type": "t"}])),
    ]
    jq = JobQueue(db_url, pool_size=2)
    try:
        ids += [jq.enqueue("t"), jq.enqueue("t", None), *jq.enqueue_many([{"type": "t", "payload": None}])]
        ids += jq.enqueue_many([{"type": "t"}] * 1000)[:1]  # the COPY + enqueue_batch path
    finally:
        jq.close()
    assert [job(db, i)["payload"] for i in ids] == [{}] * len(ids)
