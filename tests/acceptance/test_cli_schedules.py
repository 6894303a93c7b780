"""`jobqueue schedules` in subprocesses: every verb, tables and --json, JOBQUEUE_* variables,
bad input naming the field (exit 65) and changing nothing."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import psycopg
import pytest

from tests.support.cli import run_cli

pytestmark = pytest.mark.timeout(180)


def run(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, database_url=url, env=env, timeout=60)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def table(db: psycopg.Connection[Any]) -> list[Any]:
    return db.execute("SELECT s::text FROM jobqueue.schedule s ORDER BY id").fetchall()


def test_schedule_verbs(db_url: str, db: psycopg.Connection[Any]) -> None:
    made = json.loads(ok(run(db_url, "schedules", "add", "nightly", "30 2 * * *", "db.cleanup", '{"days": 30}',
                             "--queue", "maint", "--priority", "high", "--missed", "latest", "--json",
                             JOBQUEUE_SCHEDULES_ADD_TZ="Europe/Berlin")))
    assert made["tz"] == "Europe/Berlin" and made["missed"] == "latest"
    assert made["job"] == {"type": "db.cleanup", "payload": {"days": 30}, "queue": "maint", "priority": 8}
    assert "schedule fast: * * * * * */10 (UTC)" in ok(run(db_url, "schedules", "add", "fast", "* * * * * */10", "p"))
    listed = json.loads(ok(run(db_url, "schedules", "list", "--json")))
    assert [r["name"] for r in listed] == ["fast", "nightly"] and listed[0]["status"] == "active"
    text = ok(run(db_url, "schedules", "list"))
    assert "schedules (2)" in text and "30 2 * * *" in text and "Europe/Berlin" in text
    shown = json.loads(ok(run(db_url, "schedules", "show", "nightly", "-n", "2", "--json")))
    assert len(shown["upcoming"]) == 2 and shown["upcoming"][0] == made["next_fire_at"]
    assert "next fire times" in ok(run(db_url, "schedules", "show", "nightly"))
    nxt = json.loads(ok(run(db_url, "schedules", "next", "--cron", "0 0 1 1 *", "--after", "2026-06-01T00:00:00Z",
                            "-n", "2", "--json")))
    assert nxt == ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]
    assert len(ok(run(db_url, "schedules", "next", "fast", "--count", "3")).split()) == 3
    paused = json.loads(ok(run(db_url, "schedules", "pause", "fast", "--json")))
    assert paused["paused"] is True
    assert "paused (paused)" in ok(run(db_url, "schedules", "list"))
    assert "active" in ok(run(db_url, "schedules", "resume", "fast"))
    assert json.loads(ok(run(db_url, "schedules", "remove", "fast", "--json"))) == {"name": "fast", "removed": True}
    assert run(db_url, "schedules", "remove", "fast").returncode == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("add", "x", "0 0 31 2 *", "t"), 'cron: day-of-month field "31" at position 5'),
        (("add", "x", "*/5 * * * * * *", "t"), "cron: has 7 fields"),
        (("add", "x", "@daily", "t", "--tz", "Nowhere/Here"), 'tz: unknown time zone "Nowhere/Here"'),
        (("add", "x", "@daily", "t", "[1]"), "payload: must be a JSON object"),
        (("add", "x", "@daily", "", "{}"), "job.type: must be a non-empty string"),
        (("add", "x", "@daily", "t", "--queue", "a b"), "job.queue: must be 1-128 characters"),
        (("pause", "nope"), 'name: no schedule named "nope"'),
        (("next", "--cron", "61 * * * *"), 'expr: minute field "61" at position 1'),
    ],
)
def test_bad_input_is_one_line_naming_the_field_and_changes_nothing(
    db_url: str, db: psycopg.Connection[Any], args: tuple[str, ...], needle: str
) -> None:
    ok(run(db_url, "schedules", "add", "x", "@hourly", "keep"))
    before = table(db)
    proc = run(db_url, "schedules", *args)
    assert proc.returncode in (65, 66, 1), proc.returncode
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr
    assert table(db) == before


def test_usage_errors(db_url: str) -> None:
    proc = run(db_url, "schedules", "add", "x", "@daily", "t", "--missed", "never")
    assert proc.returncode == 2 and "--missed" in proc.stderr
    proc = run(db_url, "schedules", "next")
    assert proc.returncode == 2 and "give a schedule NAME or --cron EXPR" in proc.stderr
