"""The real `jobqueue` CLI in subprocesses: enqueue, jobs, dlq, queues, reconcile, stats, demo.

Every test runs the command as a user would (``python -m jobqueue --database-url URL ...``)
against its own database, and checks the outcome in the database or in ``--json`` output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue.db import REQUIRED_SCHEMA_VERSION
from tests.conftest import ROOT
from tests.support.cli import cli_env, run_cli

pytestmark = pytest.mark.timeout(180)

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def jq(db_url: str) -> Run:
    """``jq("jobs", "list", input=None, env=None)``: the CLI on the test's database."""

    def run(*args: str, input: str = "", env: dict[str, str] | None = None, timeout: float = 60):
        return run_cli(*args, database_url=db_url, input=input, env=env, timeout=timeout)

    return run


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def doc(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(proc).stdout)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\nstderr: {proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jobqueue: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


def count_jobs(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) AS n FROM jobqueue.jobs").fetchone()
    assert row is not None
    return int(row["n"])


def sql_enqueue(db: psycopg.Connection[Any], type: str = "t", **options: Any) -> int:
    names = ", ".join(f"{k} => %({k})s" for k in options)
    row = db.execute(
        f"SELECT jobqueue.enqueue(%(type)s, '{{}}'::jsonb{', ' if names else ''}{names}) AS id",
        {"type": type, **options},
    ).fetchone()
    assert row is not None
    return int(row["id"])


def dead_letters(
    db: psycopg.Connection[Any], n: int, *, queue: str, type: str = "t", error_class: str = "permanent"
) -> list[int]:
    """Enqueue, claim and fail ``n`` jobs for good, as a worker would."""
    ids = [sql_enqueue(db, type, queue=queue, max_attempts=1) for _ in range(n)]
    claimed = db.execute(
        "SELECT id, token FROM jobqueue.claim(ARRAY[%s], 'test-worker', %s, NULL, ARRAY[%s])", (queue, n, type)
    ).fetchall()
    assert sorted(r["id"] for r in claimed) == sorted(ids)
    for row in claimed:
        db.execute("SELECT jobqueue.fail(%s, %s, %s, %s)", (row["id"], row["token"], f"boom {row['id']}", error_class))
    return ids


def state_of(db: psycopg.Connection[Any], job_id: int) -> str:
    row = db.execute("SELECT state::text AS state FROM jobqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row["state"])


def dead_ids(db: psycopg.Connection[Any]) -> set[int]:
    return {int(r["id"]) for r in db.execute("SELECT id FROM jobqueue.jobs WHERE state = 'dead_letter'").fetchall()}


@pytest.fixture
def worker(db_url: str, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start `jobqueue worker --app jobqueue.examples:jq` on a queue; stopped with SIGTERM at the end."""
    procs: list[subprocess.Popen[str]] = []
    logs: list[Any] = []

    def start(queue: str) -> subprocess.Popen[str]:
        log = open(tmp_path / f"worker-{len(procs)}.log", "w")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        command = ["worker", "--app", "jobqueue.examples:jq", "--queues", queue, "--concurrency", "4"]
        command += ["--poll-interval", "0.1", "--reconcile-interval", "1"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "--database-url", db_url, *command],
            cwd=ROOT,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_with_every_option_shows_in_jobs_show(jq: Run, db: psycopg.Connection[Any]) -> None:
    parent = int(ok(jq("enqueue", "setup.parent")).stdout)
    run_at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    expires_at = run_at + timedelta(days=1)
    created = doc(
        jq(
            "enqueue",
            "email.send",
            '{"to": "a@example.com", "n": 1.5}',
            "--queue",
            "email",
            "--priority",
            "high",
            "--run-at",
            run_at.isoformat(),
            "--max-attempts",
            "7",
            "--retry-policy",
            '{"strategy": "fixed", "initial_delay": 5}',
            "--unique-key",
            "welcome:42",
            "--expires-at",
            expires_at.isoformat(),
            "--tenant",
            "acme",
            "--user",
            "u-1",
            "--tag",
            "welcome",
            "--tag",
            "mail",
            "--metadata",
            '{"trace": "abc"}',
            "--depends-on",
            str(parent),
            "--timeout",
            "90s",
            "--visibility-timeout",
            "2m",
            "--json",
        )
    )
    job = doc(jq("jobs", "show", str(created["id"]), "--json"))
    assert job["id"] == created["id"]
    assert job["type"] == "email.send" and job["queue"] == "email" and job["state"] == "pending"
    assert job["payload"] == {"to": "a@example.com", "n": 1.5}
    assert job["priority"] == 8 and job["max_attempts"] == 7
    assert job["retry_policy"] == {"strategy": "fixed", "initial_delay": 5}
    assert job["unique_key"] == "welcome:42"
    assert datetime.fromisoformat(job["run_at"]) == run_at
    assert datetime.fromisoformat(job["expires_at"]) == expires_at
    assert job["tenant_id"] == "acme" and job["user_id"] == "u-1"
    assert job["tags"] == ["welcome", "mail"]
    assert job["metadata"] == {"trace": "abc"}
    assert job["depends_on"] == [parent]
    assert job["timeout"] == 90 and job["visibility_timeout"] == 120
    # A duplicate unique key (of the same tenant: keys are per tenant) prints the live job's id and adds nothing.
    before = count_jobs(db)
    again = ok(jq("enqueue", "email.send", '{"to": "b@example.com"}', "--unique-key", "welcome:42", "--tenant", "acme"))
    assert int(again.stdout) == created["id"] and count_jobs(db) == before
    # The human view names the job and its fields.
    shown = ok(jq("jobs", "show", str(created["id"])))
    assert f"job {created['id']}" in shown.stdout and "email.send" in shown.stdout


def test_enqueue_payload_from_stdin_and_file_and_delay(jq: Run, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    from_stdin = int(ok(jq("enqueue", "t", "-", "--delay", "30s", input='{"from": "stdin"}')).stdout)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"from": "file", "list": [1, 2]}')
    from_file = int(ok(jq("enqueue", "t", f"@{payload_file}", "--priority", "3")).stdout)
    no_payload = int(ok(jq("enqueue", "t")).stdout)
    rows = {
        r["id"]: r
        for r in db.execute(
            "SELECT id, payload, priority, extract(epoch FROM run_at - now()) AS wait_s FROM jobqueue.jobs"
        ).fetchall()
    }
    assert rows[from_stdin]["payload"] == {"from": "stdin"}
    assert 20 < float(rows[from_stdin]["wait_s"]) <= 30
    assert rows[from_file]["payload"] == {"from": "file", "list": [1, 2]} and rows[from_file]["priority"] == 3
    assert rows[no_payload]["payload"] == {}


def test_options_are_read_from_environment_variables(jq: Run, db: psycopg.Connection[Any]) -> None:
    env = {"JOBQUEUE_ENQUEUE_QUEUE": "from-env", "JOBQUEUE_ENQUEUE_TAG": "a b", "JOBQUEUE_ENQUEUE_JSON": "1"}
    created = doc(jq("enqueue", "t", env=env))
    job = doc(jq("jobs", "show", str(created["id"]), "--json"))
    assert job["queue"] == "from-env" and job["tags"] == ["a", "b"]
    listed = doc(jq("jobs", "list", env={"JOBQUEUE_JOBS_LIST_QUEUE": "from-env", "JOBQUEUE_JOBS_LIST_JSON": "true"}))
    assert [j["id"] for j in listed["jobs"]] == [created["id"]]
    helptext = ok(jq("enqueue", "--help")).stdout
    for name in ("JOBQUEUE_ENQUEUE_QUEUE", "JOBQUEUE_ENQUEUE_PRIORITY", "JOBQUEUE_ENQUEUE_WAIT_TIMEOUT"):
        assert name in helptext


def test_enqueue_wait_reports_the_outcome(jq: Run, worker: Callable[[str], subprocess.Popen[str]]) -> None:
    worker("waitq")
    done = jq(
        "enqueue",
        "examples.resize_image",
        '{"image": "cat.png", "work_ms": 1}',
        "-q",
        "waitq",
        "--wait",
        "--wait-timeout",
        "60s",
    )
    assert ok(done).stdout.strip() and json.loads(done.stdout) == {
        "image": "cat.png",
        "thumbnail": "cat_640w.jpg",
        "width": 640,
    }
    declined = jq(
        "enqueue",
        "examples.charge_card",
        '{"order_id": "o1", "card": "4000000000000002", "amount_cents": 100}',
        "-q",
        "waitq",
        "--wait",
        "--wait-timeout",
        "60s",
    )
    assert declined.returncode == 1, declined.stderr
    assert "dead_letter" in declined.stderr and declined.stdout == ""
    as_json = doc(jq("enqueue", "examples.resize_image", '{"image": "dog.png"}', "-q", "waitq", "--wait", "--json"))
    assert as_json["state"] == "completed" and as_json["output"]["thumbnail"] == "dog_640w.jpg"


def test_enqueue_wait_timeout_exits_124(jq: Run) -> None:
    started = time.monotonic()
    proc = jq("enqueue", "t", "-q", "nobody-works-here", "--wait", "--wait-timeout", "300ms")
    assert proc.returncode == 124, proc.stderr
    assert "still pending" in proc.stderr
    assert proc.stdout == ""
    assert time.monotonic() - started < 30


def test_enqueue_wait_says_at_once_what_the_job_waits_for(
    jq: Run, db: psycopg.Connection[Any], worker: Callable[[str], subprocess.Popen[str]]
) -> None:
    """Issue 14 item 3: `enqueue --wait` with no worker waited silently forever. It now says
    the job id at once, and at every change what the job waits for."""
    alone = jq("enqueue", "examples.resize_image", "-q", "nobody-works-here", "--wait", "--wait-timeout", "300ms")
    assert alone.returncode == 124 and alone.stdout == ""
    lines = alone.stderr.splitlines()
    job_id = max(int(r["id"]) for r in db.execute("SELECT id FROM jobqueue.jobs").fetchall())
    assert lines[0].startswith(f"job {job_id}: waiting for it to finish"), lines
    assert lines[1] == (
        f"job {job_id}: pending: waiting for a worker on queue 'nobody-works-here' that handles "
        "'examples.resize_image'; no worker is running on queue 'nobody-works-here'"
    )
    # A state change is shown: scheduled, then runnable (and still nobody to run it).
    later = jq("enqueue", "t", "-q", "nobody-works-here", "--delay", "500ms", "--wait", "--wait-timeout", "5s")
    assert later.returncode == 124
    assert "pending: scheduled for " in later.stderr.splitlines()[1]
    assert "no worker is running on queue 'nobody-works-here'" in later.stderr.splitlines()[2]
    # The timeout comes from the environment like every option.
    from_env = jq("enqueue", "t", "-q", "nobody-works-here", "--wait", env={"JOBQUEUE_ENQUEUE_WAIT_TIMEOUT": "200ms"})
    assert from_env.returncode == 124 and "(--wait-timeout)" in from_env.stderr
    ok(jq("queues", "pause", "paused-q"))
    paused = jq("enqueue", "t", "-q", "paused-q", "--wait", "--wait-timeout", "200ms")
    assert "queue 'paused-q' is paused" in paused.stderr
    proc = worker("served")
    deadline = time.monotonic() + 60
    while not any(w["pid"] == proc.pid and w["status"] == "healthy" for w in doc(jq("workers", "list", "--json"))):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    unhandled = jq("enqueue", "nobody.handles.this", "-q", "served", "--wait", "--wait-timeout", "300ms")
    assert unhandled.returncode == 124
    assert "the 1 worker(s) on queue 'served' do not handle 'nobody.handles.this'" in unhandled.stderr
    done = ok(jq("enqueue", "examples.resize_image", '{"image": "a.png"}', "-q", "served", "--wait"))
    assert json.loads(done.stdout)["thumbnail"] == "a_640w.jpg"  # stdout: only the output
    assert done.stderr.startswith("job ")


# -- INPUT-01: bad input is one line, the right exit code, and nothing written -------------------

BAD_INPUT = [
    pytest.param(["enqueue", "t", "{}", "--bogus"], "", 2, ["--bogus"], id="unknown-flag"),
    pytest.param(
        ["enqueue", "t", "--delay", "5s", "--run-at", "2030-01-01T00:00:00Z"],
        "",
        2,
        ["--delay", "--run-at"],
        id="delay-and-run-at",
    ),
    pytest.param(
        ["enqueue", "t", "--expires-in", "1h", "--expires-at", "2030-01-01T00:00:00Z"],
        "",
        2,
        ["--expires-at", "--expires-in"],
        id="expires-at-and-in",
    ),
    pytest.param(["enqueue", "t", "--wait-timeout", "5s"], "", 2, ["--wait"], id="wait-timeout-without-wait"),
    pytest.param(["enqueue", "t", "not json"], "", 65, ["payload", "not valid JSON"], id="payload-not-json"),
    pytest.param(["enqueue", "t", '{"x": NaN}'], "", 65, ["payload", "NaN"], id="payload-nan"),
    pytest.param(["enqueue", "t", '{"x": -Infinity}'], "", 65, ["payload", "Infinity"], id="payload-infinity"),
    pytest.param(["enqueue", "t", '{"x": 1e999}'], "", 65, ["payload"], id="payload-overflow"),
    pytest.param(["enqueue", "t", "[1, 2]"], "", 65, ["payload", "JSON object", "array"], id="payload-array"),
    pytest.param(["enqueue", "t", '"text"'], "", 65, ["payload", "JSON object"], id="payload-string"),
    pytest.param(["enqueue", "t", "null"], "", 65, ["payload", "JSON object", "null"], id="payload-null"),
    pytest.param(["enqueue", "t", "-"], "", 65, ["payload", "stdin is empty"], id="payload-empty-stdin"),
    pytest.param(["enqueue", "t", "-"], "  \n", 65, ["payload", "stdin is empty"], id="payload-blank-stdin"),
    pytest.param(
        ["enqueue", "t", "@/no/such/payload.json"],
        "",
        65,
        ["payload", "/no/such/payload.json"],
        id="payload-missing-file",
    ),
    pytest.param(["enqueue", "t", "--priority", "urgent"], "", 2, ["--priority", "urgent"], id="priority-name"),
    pytest.param(["enqueue", "t", "--priority", "11"], "", 2, ["--priority"], id="priority-range"),
    pytest.param(["enqueue", "t", "--delay", "-5s"], "", 2, ["--delay", "negative"], id="negative-delay"),
    pytest.param(["enqueue", "t", "--delay", "soon"], "", 2, ["--delay", "duration"], id="delay-not-a-duration"),
    pytest.param(
        ["enqueue", "t", "--run-at", "2030-01-01T09:00:00"], "", 2, ["--run-at", "time zone"], id="naive-run-at"
    ),
    pytest.param(["enqueue", "t", "--max-attempts", "0"], "", 2, ["--max-attempts"], id="max-attempts-0"),
    pytest.param(["enqueue", "t", "--timeout", "0"], "", 2, ["--timeout"], id="timeout-0"),
    pytest.param(
        ["enqueue", "t", "--depends-on", "x"],
        "",
        2,
        ["--depends-on", "job id must be a number"],
        id="depends-on-not-an-id",
    ),
    pytest.param(["enqueue", "t", "--metadata", "[1]"], "", 65, ["metadata", "JSON object"], id="metadata-array"),
    pytest.param(
        ["enqueue", "t", "--retry-policy", "{"], "", 65, ["retry_policy", "not valid JSON"], id="policy-not-json"
    ),
    pytest.param(
        ["enqueue", "t", "--retry-policy", '{"strategy": "sometimes"}'],
        "",
        65,
        ["retry_policy", "strategy"],
        id="policy-unknown-strategy",
    ),
    pytest.param(["enqueue", "t", "--queue", "no spaces allowed"], "", 65, ["queue"], id="queue-name"),
    pytest.param(["enqueue", ""], "", 65, ["type"], id="empty-type"),
    pytest.param(["enqueue"], "", 2, ["TYPE"], id="missing-type"),
    pytest.param(["jobs", "list", "--state", "sleeping"], "", 2, ["--state", "sleeping"], id="jobs-list-state"),
    pytest.param(["jobs", "list", "--limit", "0"], "", 2, ["--limit"], id="jobs-list-limit"),
    pytest.param(
        ["jobs", "show", "abc"], "", 2, ["ID", "job id must be a number, not 'abc'"], id="jobs-show-not-an-id"
    ),
    pytest.param(["jobs", "show", "0"], "", 2, ["ID", "job id must be a positive number"], id="jobs-show-zero"),
    pytest.param(["dlq", "redrive", "1", "x"], "", 2, ["job id must be a number"], id="dlq-redrive-not-an-id"),
    pytest.param(["jobs", "show", "999999"], "", 66, ["999999"], id="jobs-show-unknown"),
    pytest.param(["jobs", "cancel", "999999"], "", 66, ["999999"], id="jobs-cancel-unknown"),
    pytest.param(["dlq", "purge"], "", 2, ["--yes"], id="dlq-purge-everything-without-yes"),
    pytest.param(["dlq", "redrive", "1", "--queue", "q"], "", 2, ["IDs or filters"], id="dlq-redrive-ids-and-filter"),
    pytest.param(["queues", "set", "q"], "", 2, ["nothing to set"], id="queues-set-nothing"),
    pytest.param(["queues", "set", "q", "--max-size", "0"], "", 2, ["--max-size"], id="queues-set-max-size-0"),
    pytest.param(
        ["queues", "set", "q", "--max-output-bytes", "16777217"], "", 2, ["--max-output-bytes"], id="queues-set-output"
    ),
    pytest.param(
        ["queues", "set", "q", "--retry-policy", '{"x": NaN}'], "", 65, ["retry_policy"], id="queues-set-policy-nan"
    ),
    pytest.param(["stats", "--watch", "--json"], "", 2, ["--watch", "--json"], id="stats-watch-json"),
    pytest.param(["reconcile", "--batch", "0"], "", 2, ["--batch"], id="reconcile-batch-0"),
    pytest.param(["health", "--max-xmin-age", "-5s"], "", 2, ["--max-xmin-age"], id="health-negative-age"),
    pytest.param(["health", "--max-xmin-age", "0"], "", 2, ["--max-xmin-age"], id="health-zero-age"),
    pytest.param(["health", "--max-xmin-xids", "0"], "", 2, ["--max-xmin-xids"], id="health-zero-xids"),
    pytest.param(
        ["health", "--max-notify-queue-usage", "1.5"], "", 2, ["--max-notify-queue-usage"], id="health-usage-over-1"
    ),
    pytest.param(["health", "--max-dead-letters", "-1"], "", 2, ["--max-dead-letters"], id="health-dead-negative"),
    pytest.param(["health", "--max-expired-leases", "x"], "", 2, ["--max-expired-leases"], id="health-leases-not-int"),
    pytest.param(["health", "--max-pending-age", "soon"], "", 2, ["--max-pending-age"], id="health-age-unparsable"),
    pytest.param(["health", "--max-xmin-age", "32d"], "", 65, ["max_xmin_age"], id="health-age-over-max"),
    pytest.param(
        ["exporter", "--once", "--redis-url", "http://127.0.0.1:6379"], "", 78, ["redis_url"], id="exporter-redis-url"
    ),
    pytest.param(["exporter", "--port", "0"], "", 2, ["--port"], id="exporter-port-0"),
]


@pytest.mark.parametrize(("args", "stdin", "code", "needles"), BAD_INPUT)
def test_bad_input_is_one_line_and_writes_nothing(
    jq: Run, db: psycopg.Connection[Any], args: list[str], stdin: str, code: int, needles: list[str]
) -> None:
    sql_enqueue(db, "existing", queue="q")
    before = count_jobs(db)
    queues_before = db.execute("SELECT * FROM jobqueue.queues ORDER BY name").fetchall()
    one_line_error(jq(*args, input=stdin), code, *needles)
    assert count_jobs(db) == before
    assert db.execute("SELECT * FROM jobqueue.queues ORDER BY name").fetchall() == queues_before


def test_unreachable_database_and_missing_schema_exit_codes(jq: Run, server: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"postgresql://nobody:secret@127.0.0.1:{port}/db"
    for verb in (["reconcile"], ["stats", "--json"], ["enqueue", "t"], ["dlq", "list"]):
        proc = run_cli(*verb, database_url=url, timeout=60)
        line = one_line_error(proc, 69, "could not connect", f"127.0.0.1:{port}")
        assert "secret" not in line
    name = f"jq_cli_admin_{os.getpid()}"
    with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobqueue", "--database-url", server.url(name), "reconcile", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        one_line_error(proc, 75, "jobqueue migrate")
    finally:
        with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- jobs --------------------------------------------------------------------------------------


def test_jobs_list_filters_and_pages(jq: Run, db: psycopg.Connection[Any]) -> None:
    a = [sql_enqueue(db, "a", queue="q1", tenant_id="t1") for _ in range(5)]
    b = [sql_enqueue(db, "b", queue="q2", tenant_id="t2") for _ in range(3)]
    cancelled = sql_enqueue(db, "a", queue="q1")
    db.execute("SELECT jobqueue.cancel(%s)", (cancelled,))

    def ids(*args: str) -> list[int]:
        return [j["id"] for j in doc(jq("jobs", "list", *args, "--json"))["jobs"]]

    assert ids("--queue", "q2") == sorted(b, reverse=True)
    assert ids("--type", "a", "--state", "pending") == sorted(a, reverse=True)
    assert ids("--tenant", "t1") == sorted(a, reverse=True)
    assert ids("--state", "cancelled") == [cancelled]
    assert ids("--state", "cancelled", "--state", "pending", "--queue", "q1") == sorted([*a, cancelled], reverse=True)
    # Pages of 2, newest first, until a short page: every job exactly once.
    seen: list[int] = []
    before: list[str] = []
    while True:
        page = doc(jq("jobs", "list", "--limit", "2", *before, "--json"))
        seen += [j["id"] for j in page["jobs"]]
        if page["next_before_id"] is None:
            break
        assert page["next_before_id"] == page["jobs"][-1]["id"]
        before = ["--before-id", str(page["next_before_id"])]
    assert seen == sorted([*a, *b, cancelled], reverse=True)
    human = ok(jq("jobs", "list", "--queue", "q1", "--limit", "2"))
    assert "more: --before-id" in human.stderr and str(max([*a, cancelled])) in human.stdout


def test_jobs_cancel_and_retry(jq: Run, db: psycopg.Connection[Any]) -> None:
    job_id = sql_enqueue(db, "t", queue="q")
    out = ok(jq("jobs", "cancel", str(job_id), "--reason", "no longer needed"))
    assert "cancelled" in out.stdout
    job = doc(jq("jobs", "show", str(job_id), "--json"))
    assert job["state"] == "cancelled" and "no longer needed" in json.dumps(job)
    again = jq("jobs", "cancel", str(job_id), "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["status"] == "already_finished"
    running = sql_enqueue(db, "t", queue="cq")
    claimed = db.execute("SELECT id FROM jobqueue.claim(ARRAY['cq'], 'w', 1)").fetchone()
    assert claimed == {"id": running}
    assert doc(jq("jobs", "cancel", str(running), "--json"))["status"] == "cancel_requested"
    assert doc(jq("jobs", "show", str(running), "--json"))["cancel_requested"] is True
    [dead] = dead_letters(db, 1, queue="rq")
    assert doc(jq("jobs", "retry", str(dead), "--json")) == {"id": dead}
    assert state_of(db, dead) == "pending"


def test_jobs_logs(jq: Run, db: psycopg.Connection[Any]) -> None:
    job_id = sql_enqueue(db, "t", queue="lq")
    row = db.execute("SELECT id, token FROM jobqueue.claim(ARRAY['lq'], 'w', 1)").fetchone()
    assert row is not None and row["id"] == job_id
    db.execute("SELECT jobqueue.add_log(%s, %s, 'resizing 3 images')", (job_id, row["token"]))
    db.execute("SELECT jobqueue.add_log(%s, %s, 'done')", (job_id, row["token"]))
    lines = doc(jq("jobs", "logs", str(job_id), "--json"))
    assert [line["message"] for line in lines] == ["resizing 3 images", "done"]
    human = ok(jq("jobs", "logs", str(job_id)))
    assert "resizing 3 images" in human.stdout


# -- dead letters ------------------------------------------------------------------------------


def test_dlq_list_and_show(jq: Run, db: psycopg.Connection[Any]) -> None:
    first = dead_letters(db, 2, queue="d1", type="x")
    second = dead_letters(db, 1, queue="d2", type="y")
    listed = doc(jq("dlq", "list", "--json"))
    assert [r["id"] for r in listed["dead_letters"]] == sorted(first + second, reverse=True)
    assert [r["id"] for r in doc(jq("dlq", "list", "--queue", "d1", "--json"))["dead_letters"]] == sorted(
        first, reverse=True
    )
    assert [r["id"] for r in doc(jq("dlq", "list", "--type", "y", "--json"))["dead_letters"]] == second
    reasons = {r["reason"] for r in listed["dead_letters"]}
    assert len(reasons) == 1
    [reason] = reasons
    assert len(doc(jq("dlq", "list", "--reason", reason, "--json"))["dead_letters"]) == 3
    assert doc(jq("dlq", "list", "--reason", "no-such-reason", "--json"))["dead_letters"] == []
    page = doc(jq("dlq", "list", "--limit", "2", "--json"))
    assert page["next_before_id"] == page["dead_letters"][-1]["id"]
    shown = doc(jq("dlq", "show", str(second[0]), "--json"))
    assert shown["state"] == "dead_letter" and shown["reason"] == reason
    assert f"boom {second[0]}" in json.dumps(shown["errors"])
    human = ok(jq("dlq", "show", str(second[0])))
    assert f"boom {second[0]}" in human.stdout and "failed attempts" in human.stdout
    assert reason in ok(jq("dlq", "list")).stdout
    pending = sql_enqueue(db, "t", queue="d1")
    one_line_error(jq("dlq", "show", str(pending)), 66, "not a dead letter")


def test_dlq_redrive_dry_run_by_id_by_filter_and_in_chunks(jq: Run, db: psycopg.Connection[Any]) -> None:
    d1 = dead_letters(db, 3, queue="r1", type="x")
    d2 = dead_letters(db, 2, queue="r2", type="y", error_class="validation")
    d3 = dead_letters(db, 5, queue="r3", type="z")
    everything = set(d1 + d2 + d3)
    assert dead_ids(db) == everything
    # --dry-run lists and changes nothing.
    dry = doc(jq("dlq", "redrive", "--queue", "r1", "--dry-run", "--json"))
    assert dry["dry_run"] is True and sorted(dry["ids"]) == sorted(d1)
    assert dead_ids(db) == everything
    dry_all = ok(jq("dlq", "redrive", "--dry-run"))
    assert "would redrive 10 dead letters" in dry_all.stdout
    assert dead_ids(db) == everything
    # By id: that one only.
    by_id = doc(jq("dlq", "redrive", str(d1[0]), "--json"))
    assert by_id["ids"] == [d1[0]] and state_of(db, d1[0]) == "pending"
    assert dead_ids(db) == everything - {d1[0]}
    # By filter.
    by_type = doc(jq("dlq", "redrive", "--type", "y", "--json"))
    assert sorted(by_type["ids"]) == sorted(d2)
    assert {state_of(db, i) for i in d2} == {"pending"}
    # A filter that matches nothing.
    assert doc(jq("dlq", "redrive", "--queue", "nothing-here", "--json"))["count"] == 0
    # In chunks of 2, at most 4: four of r3, oldest first or not, but exactly four.
    limited = doc(jq("dlq", "redrive", "--queue", "r3", "--chunk-size", "2", "--limit", "4", "--json"))
    assert limited["count"] == 4 and set(limited["ids"]) <= set(d3)
    # The rest in chunks of 2 (3 calls: 2 + 2 + 1 left over from r1 and r3).
    rest = doc(jq("dlq", "redrive", "--chunk-size", "2", "--json"))
    assert sorted(rest["ids"]) == sorted(set(d1[1:]) | (set(d3) - set(limited["ids"])))
    assert dead_ids(db) == set()


def test_dlq_redrive_reports_ids_that_are_not_dead_letters_and_shows_progress(
    jq: Run, db: psycopg.Connection[Any]
) -> None:
    [dead] = dead_letters(db, 1, queue="n1")
    pending = sql_enqueue(db, "t", queue="n1")
    proc = jq("dlq", "redrive", str(dead), str(pending), "999999")
    assert proc.returncode == 1
    assert f"redrove 1 dead letter: {dead}" in proc.stdout
    assert f"not dead letters (left as they are): {pending}, 999999" in proc.stderr
    assert state_of(db, dead) == "pending" and state_of(db, pending) == "pending"
    # Past one chunk, a progress bar (on stderr) shows the redrive; stdout keeps the summary.
    many = dead_letters(db, 7, queue="n2")
    chunked = ok(jq("dlq", "redrive", "--queue", "n2", "--chunk-size", "3"))
    assert chunked.stdout.startswith("redrove 7 dead letters") and "redriving" in chunked.stderr
    assert {state_of(db, i) for i in many} == {"pending"}


def test_dlq_redrive_by_error_class(jq: Run, db: psycopg.Connection[Any]) -> None:
    transient = dead_letters(db, 2, queue="e1", error_class="transient")  # max_attempts 1: exhausted
    permanent = dead_letters(db, 1, queue="e1", error_class="permanent")
    proc = jq("dlq", "redrive", "--error-class", "transient", "--dry-run", "--json")
    if proc.returncode == 65 and 'unknown key "error_class"' in proc.stderr:
        pytest.skip("the SQL dead-letter filter has no error_class key yet")
    assert sorted(doc(proc)["ids"]) == sorted(transient)
    done = doc(jq("dlq", "redrive", "--error-class", "transient", "--json"))
    assert sorted(done["ids"]) == sorted(transient) and state_of(db, permanent[0]) == "dead_letter"


def test_dlq_archive_and_purge(jq: Run, db: psycopg.Connection[Any]) -> None:
    old = dead_letters(db, 2, queue="p1")
    new = dead_letters(db, 2, queue="p2")
    assert doc(jq("dlq", "archive", "--max-age-days", "1", "--json")) == {"archived": 0}
    db.execute("UPDATE jobqueue.dead_letter SET finished_at = now() - interval '3 days' WHERE id = ANY(%s)", (old,))
    assert doc(jq("dlq", "archive", "--max-age-days", "2", "--json")) == {"archived": 2}
    assert {state_of(db, i) for i in old} == {"archived"}
    listed = doc(jq("dlq", "list", "--json"))["dead_letters"]
    assert {r["id"]: r["state"] for r in listed} == {
        **dict.fromkeys(old, "archived"),
        **dict.fromkeys(new, "dead_letter"),
    }
    # Archived dead letters are not redriven by a filter.
    assert doc(jq("dlq", "redrive", "--queue", "p1", "--dry-run", "--json"))["count"] == 0
    # Purge: everything needs --yes; a filter does not.
    one_line_error(jq("dlq", "purge"), 2, "--yes")
    assert dead_ids(db) == set(new)
    more = dead_letters(db, 1, queue="p3")
    assert doc(jq("dlq", "purge", "--queue", "p2", "--json")) == {"purged": 2}
    assert dead_ids(db) == set(more)
    assert "purged 3 dead letters" in ok(jq("dlq", "purge", "--yes")).stdout  # p3's and the archived two
    assert db.execute("SELECT count(*) AS n FROM jobqueue.dead_letters").fetchone() == {"n": 0}


# -- queues ------------------------------------------------------------------------------------


def test_queues_pause_resume_and_set(jq: Run, db: psycopg.Connection[Any]) -> None:
    sql_enqueue(db, "t", queue="qp")

    def queue_row() -> dict[str, Any]:
        rows = [q for q in doc(jq("queues", "list", "--json")) if q["name"] == "qp"]
        assert len(rows) == 1
        return dict(rows[0])

    assert queue_row()["paused"] is False
    assert "paused" in ok(jq("queues", "pause", "qp")).stdout
    assert queue_row()["paused"] is True
    stats = {r["queue"]: r for r in doc(jq("stats", "--json"))}
    assert stats["qp"]["paused"] is True
    assert db.execute("SELECT count(*) AS n FROM jobqueue.claim(ARRAY['qp'], 'w', 10)").fetchone() == {"n": 0}
    ok(jq("queues", "resume", "qp"))
    assert queue_row()["paused"] is False

    result = doc(
        jq(
            "queues",
            "set",
            "qp",
            "--max-size",
            "2",
            "--visibility-timeout",
            "2m",
            "--max-attempts",
            "3",
            "--retry-policy",
            '{"strategy": "linear", "initial_delay": 2}',
            "--dead-letter-max-age-days",
            "3",
            "--history-retention",
            "1d",
            "--aging-interval",
            "30s",
            "--max-output-bytes",
            "2048",
            "--json",
        )
    )
    assert result["queue"] == "qp"
    row = queue_row()
    assert row["max_size"] == 2 and row["max_attempts"] == 3
    assert row["visibility_timeout"] == 120 and row["history_retention"] == 86400 and row["aging_interval"] == 30
    assert row["retry_policy"] == {"strategy": "linear", "initial_delay": 2}
    assert row["dead_letter_max_age_days"] == 3 and row["max_output_bytes"] == 2048
    # The cap holds: one job is there, a second fits, a third is refused with 75.
    ok(jq("enqueue", "t", "-q", "qp"))
    before = count_jobs(db)
    one_line_error(jq("enqueue", "t", "-q", "qp"), 75, "qp")
    assert count_jobs(db) == before
    # `none` clears a setting; the others stay.
    ok(jq("queues", "set", "qp", "--max-size", "none", "--retry-policy", "none", "--max-output-bytes", "none"))
    row = queue_row()
    assert row["max_size"] is None and row["retry_policy"] is None and row["max_attempts"] == 3
    assert row["max_output_bytes"] is None
    ok(jq("enqueue", "t", "-q", "qp"))
    assert "qp" in ok(jq("queues", "list")).stdout


# -- reconcile, stats, workers -----------------------------------------------------------------


def test_reconcile_json_dry_run_and_real(jq: Run, db: psycopg.Connection[Any]) -> None:
    job_id = sql_enqueue(db, "t", queue="rc", max_attempts=3)
    row = db.execute("SELECT id FROM jobqueue.claim(ARRAY['rc'], 'gone-worker', 1)").fetchone()
    assert row is not None and row["id"] == job_id
    db.execute("UPDATE jobqueue.job SET lease_expires_at = now() - interval '1 minute' WHERE id = %s", (job_id,))
    dry = doc(jq("reconcile", "--dry-run", "--json"))
    assert isinstance(dry, dict) and any(v == 1 for v in dry.values() if isinstance(v, int))
    assert state_of(db, job_id) == "processing"
    done = doc(jq("reconcile", "--json", "--batch", "10"))
    assert isinstance(done, dict) and any(v == 1 for v in done.values() if isinstance(v, int))
    assert state_of(db, job_id) == "retrying"
    human = ok(jq("reconcile"))
    assert human.stdout.startswith("reconcile: ")


def test_stats_and_workers(
    jq: Run, db: psycopg.Connection[Any], worker: Callable[[str], subprocess.Popen[str]]
) -> None:
    for _ in range(3):
        sql_enqueue(db, "t", queue="sq")
    sql_enqueue(db, "t", queue="sq", delay=timedelta(hours=1))
    rows = {r["queue"]: r for r in doc(jq("stats", "--json"))}
    assert rows["sq"]["pending"] + rows["sq"]["scheduled"] == 4
    assert rows["sq"]["scheduled"] == 1
    assert "sq" in ok(jq("stats")).stdout
    proc = worker("wq")
    deadline = time.monotonic() + 30
    while not doc(jq("workers", "list", "--json")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    listed = doc(jq("workers", "list", "--json"))
    assert any(w["pid"] == proc.pid for w in listed)
    assert "wq" in ok(jq("workers", "list")).stdout


def test_stats_watch_refreshes_until_interrupted(jq: Run, db_url: str, db: psycopg.Connection[Any]) -> None:
    sql_enqueue(db, "t", queue="watched")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "--database-url", db_url, "stats", "--watch", "--interval", "100ms"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first  # something was drawn
        time.sleep(0.5)  # let it refresh a few times (not synchronisation: any count passes)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "watched" in first + out


# -- demo --------------------------------------------------------------------------------------


def test_demo_runs_to_completion(jq: Run, db_url: str) -> None:
    """The demo as `make demo` runs it (the database from the environment), on an 80-column
    terminal: every line fits (issue 14 item 6), the "Next" commands are copy-pasteable, one
    a line (item 7), and the header shows one schema version a user can compare (item 7)."""
    started = time.monotonic()
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_") or k == "JOBQUEUE_HOME"}
    proc = subprocess.run(
        [sys.executable, "-m", "jobqueue", "demo"],
        capture_output=True,
        text=True,
        env={**base, "JOBQUEUE_DATABASE_URL": db_url, "COLUMNS": "80"},
        cwd=ROOT,
        timeout=150,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert elapsed < 120, elapsed
    out = proc.stdout
    assert "enqueued 3000 jobs" in out
    assert "jobs finished" in out and "3000/3000" in out
    assert "dead letters (6)" in out
    redriven = out.split("redriven job", 1)[1].splitlines()[0]
    assert "completed" in redriven
    assert "demo finished" in out
    lines = out.splitlines()
    assert lines[0].startswith("database: ")  # a URL: printed whole, however long
    # the dashboard hint (issue 18): a `serve` command, where to browse, and a token to sign in with
    hint = lines.index("Open the dashboard on this data:")
    serve_cmd, browse, token = (line.strip() for line in lines[hint + 1 : hint + 4])
    assert "jobqueue_web@" in serve_cmd and serve_cmd.endswith("serve --port 8000"), serve_cmd
    assert "http://127.0.0.1:8000/" in browse
    assert token and " " not in token
    wrapped = [line for line in lines[1:] if line.strip() not in (serve_cmd, token)]  # URLs and tokens: whole
    assert max(len(line) for line in wrapped) <= 80, max(wrapped, key=len)
    headers = [line for line in lines if "┃" in line]
    assert len(headers) == 2 and not any("…" in h for h in headers), headers  # stats, dead letters
    assert [h.strip() for h in headers[1].split("┃")] == ["id", "type", "reason", "tries", "last error"]
    assert "done, failed, jobs/min, error rate: over the last 5m" in " ".join(lines)  # done/win explained
    needs = REQUIRED_SCHEMA_VERSION
    assert "revision" not in out and f"jobqueue schema {needs} (this jobqueue needs {needs})" in out
    after = lines[lines.index(next(line for line in lines if "Next, try:" in line)) + 1 : hint - 1]
    script = str(Path(sys.executable).parent / "jobqueue")
    shown = os.path.relpath(script, ROOT) if not shutil.which("jobqueue") else "jobqueue"
    assert [line.split("#")[0].split() for line in after] == [
        [shown, "stats"],
        [shown, "jobs", "list", "-q", "demo"],
        [shown, "dlq", "list", "-q", "demo"],
        [shown, "--help"],
    ]
    assert "|" not in " ".join(after)
    for line in after[:3]:  # each runs as printed, from the project folder
        command = line.split("#")[0].split()
        ran = subprocess.run(
            [sys.executable, "-m", "jobqueue", *command[1:]],
            capture_output=True,
            text=True,
            env={**base, "JOBQUEUE_DATABASE_URL": db_url},
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, (line, ran.stderr)
    # Twice in a row works: the demo clears its queue first.
    again = jq("demo", "--jobs", "200", timeout=150)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cleared the previous demo" in again.stdout
    assert "completed" in again.stdout.split("redriven job", 1)[1].splitlines()[0]


def test_health_exit_code_follows_the_alerts_and_covers_ops_03(jq: Run, db: psycopg.Connection[Any]) -> None:
    """OPS-03: what an operator scrapes is all there: queue depth, oldest waiting age,
    running, dead-letter depth (stats); expired leases, reconcile last-run age, NOTIFY queue
    usage and oldest xmin age (health). `jobqueue health` exits 1 while a check alerts."""
    never = jq("health")
    assert never.returncode == 1, never.stderr
    assert "reconcile_last_run_age_s" in never.stdout and "health: 1 alert (reconcile_last_run_age_s)" in never.stdout
    ok(jq("reconcile"))
    rows = doc(jq("health", "--json"))
    names = {r["check_name"] for r in rows}
    assert {"oldest_xmin_age_s", "oldest_xmin_age_xids", "reconcile_last_run_age_s", "lease_overdue_s"} <= names
    assert "notify_queue_usage" in names
    assert not [r for r in rows if r["alert"]]
    sql_enqueue(db, "t", queue="q")
    stats = doc(jq("stats", "--json"))
    assert {"pending", "oldest_pending_age_s", "processing", "dead_letters"} <= set(stats[0])
    # a threshold from the environment, as every option: one dead letter over a limit of 0
    job = sql_enqueue(db, "t", queue="dlq-health")
    token = db.execute("SELECT token FROM jobqueue.claim(ARRAY['dlq-health'], 'w', 1)").fetchone()["token"]
    db.execute("SELECT jobqueue.fail(%s, %s, 'no', 'permanent')", (job, token))
    alert = jq("health", env={"JOBQUEUE_HEALTH_MAX_DEAD_LETTERS": "0"})
    assert alert.returncode == 1 and "health: 1 alert (dead_letters)" in alert.stdout, alert.stdout
