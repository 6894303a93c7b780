"""`jobqueue alerts` in subprocesses: every verb, tables and --json, JOBQUEUE_ALERT_* applied by
`jobqueue reconcile`, open alerts in stats and health, bad input naming the field (exit 65)
and changing nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.cli import run_cli

pytestmark = pytest.mark.timeout(180)

EMAIL = '{"host": "127.0.0.1", "port": 2525, "from": "jq@example.com", "to": ["ops@example.com"]}'


def run(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, database_url=url, env=env, timeout=60)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def alert_tables(db: psycopg.Connection[Any]) -> list[Any]:
    return db.execute(
        "SELECT (SELECT array_agg(r::text ORDER BY r.id) FROM jobqueue.alert_rule r) AS rules, "
        "(SELECT array_agg(c::text ORDER BY c.name) FROM jobqueue.alert_channel c) AS channels, "
        "(SELECT array_agg(i::text ORDER BY i.id) FROM jobqueue.alert_incident i) AS incidents, "
        "(SELECT count(*) FROM jobqueue.job) AS jobs"
    ).fetchall()


def test_alert_verbs_end_to_end(db_url: str, db: psycopg.Connection[Any]) -> None:
    made = json.loads(
        ok(
            run(
                db_url,
                "alerts",
                "channels",
                "add",
                "ops",
                "email",
                EMAIL,
                "--min-severity",
                "info",
                "--repeat",
                "30m",
                "--json",
            )
        )
    )
    assert made["repeat_interval_s"] == 1800 and made["min_severity"] == "info"
    ok(
        run(
            db_url,
            "alerts",
            "channels",
            "add",
            "pd",
            "pagerduty",
            '{"routing_key_env": "PD_KEY"}',
            "--rule-kind",
            "worker_down",
            "--no-resolve",
        )
    )
    listed = json.loads(ok(run(db_url, "alerts", "channels", "list", "--json")))
    assert [c["name"] for c in listed] == ["ops", "pd"] and listed[1]["kinds"] == ["worker_down"]
    assert "alert channels (2)" in ok(run(db_url, "alerts", "channels", "list"))

    rule = json.loads(
        ok(
            run(
                db_url,
                "alerts",
                "rules",
                "set",
                "queue_depth",
                "--queue",
                "emails",
                "--threshold",
                "2",
                "--clear-threshold",
                "1",
                "--severity",
                "critical",
                "--json",
            )
        )
    )
    assert (rule["queue"], rule["threshold"], rule["severity"]) == ("emails", 2, "critical")
    assert "alert rules (11)" in ok(run(db_url, "alerts", "rules", "list"))

    for _ in range(3):
        db.execute("SELECT jobqueue.enqueue('send', '{}', queue => 'emails')")
    db.execute("SELECT jobqueue.register_worker('w1', 'box', 7)")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '10 minutes'")
    summary = json.loads(ok(run(db_url, "reconcile", "--json")))
    assert summary["alerts_opened"] == 2 and summary["alert_notifications"] == 3  # ops x2, pd x1 (worker_down)
    open_ = json.loads(ok(run(db_url, "alerts", "list", "--json")))
    assert sorted(a["kind"] for a in open_) == ["queue_depth", "worker_down"]
    text = ok(run(db_url, "alerts", "list"))
    assert "alerts: open (2)" in text and "worker_down" in text
    worker_alert = next(a for a in open_ if a["kind"] == "worker_down")
    acked = json.loads(ok(run(db_url, "alerts", "ack", str(worker_alert["id"]), "--by", "alice", "--json")))
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "alice"
    shown = json.loads(ok(run(db_url, "alerts", "show", str(worker_alert["id"]), "--json")))
    assert sorted((n["channel"], n["event"]) for n in shown["notifications"]) == [
        ("ops", "acknowledge"),
        ("ops", "trigger"),
        ("pd", "acknowledge"),
        ("pd", "trigger"),
    ]
    assert "notifications (4)" in ok(run(db_url, "alerts", "show", str(worker_alert["id"])))

    stats = ok(run(db_url, "stats"))
    assert "open alerts: 2 (critical 2)" in stats, stats
    health = run(db_url, "health")
    assert "open alerts: 2" in health.stdout, health.stdout

    assert "resolved" in ok(run(db_url, "alerts", "resolve", str(worker_alert["id"])))
    again = run(db_url, "alerts", "ack", str(worker_alert["id"]))
    assert again.returncode == 65 and "is resolved" in again.stderr, again.stderr
    assert run(db_url, "alerts", "show", "999999").returncode != 0

    test = json.loads(ok(run(db_url, "alerts", "channels", "test", "pd", "--json")))
    job = db.execute("SELECT queue, type, payload FROM jobqueue.jobs WHERE id = %s", (test["job_id"],)).fetchone()
    assert job is not None and (job["queue"], job["type"]) == ("jobqueue.alerts", "jobqueue.notify")
    assert job["payload"]["test"] is True and job["payload"]["channel"]["kind"] == "pagerduty"

    assert "removed" in ok(run(db_url, "alerts", "rules", "remove", "queue_depth", "--queue", "emails"))
    assert run(db_url, "alerts", "rules", "remove", "queue_depth", "--queue", "emails").returncode == 1
    assert "removed" in ok(run(db_url, "alerts", "channels", "remove", "ops"))
    assert run(db_url, "alerts", "channels", "remove", "ops").returncode == 1
    checked = json.loads(ok(run(db_url, "alerts", "check", "--dry-run", "--json")))
    assert "alerts_open" in checked


def test_a_worker_role_reconciles_with_a_warning_when_it_may_not_apply_alert_variables(
    db_url: str, db: psycopg.Connection[Any], login_role: Callable[[str], str]
) -> None:
    worker_url = make_conninfo(db_url, user=login_role("jobqueue_worker"))
    before = alert_tables(db)
    proc = run(worker_url, "reconcile", "--json", JOBQUEUE_ALERT_QUEUE_DEPTH="250")
    assert "alerts_opened" in json.loads(ok(proc))  # the pass ran, detection included
    assert "JOBQUEUE_ALERT_* not applied" in proc.stderr, proc.stderr
    assert alert_tables(db) == before


def test_reconcile_applies_alert_variables_and_refuses_unknown_ones(db_url: str, db: psycopg.Connection[Any]) -> None:
    proc = run(db_url, "reconcile", JOBQUEUE_ALERT_QUEUE_DEPTH="250", JOBQUEUE_ALERT_WORKER_DOWN_AFTER="2 minutes")
    ok(proc)
    assert "alert rule queue_depth: set from JOBQUEUE_ALERT_QUEUE_DEPTH" in proc.stderr
    rules = {r["name"]: r for r in db.execute("SELECT * FROM jobqueue.list_alert_rules() WHERE queue IS NULL")}
    assert rules["queue_depth"]["threshold"] == 250 and rules["worker_down"]["threshold"] == 120
    quiet = run(db_url, "reconcile", JOBQUEUE_ALERT_QUEUE_DEPTH="250")
    assert ok(quiet) and "alert rule" not in quiet.stderr  # unchanged: not written again
    before = alert_tables(db)
    bad = run(db_url, "reconcile", JOBQUEUE_ALERT_QUEUE_DEPHT="5")
    assert bad.returncode == 78 and "JOBQUEUE_ALERT_QUEUE_DEPHT: not a known alert variable" in bad.stderr
    negative = run(db_url, "reconcile", JOBQUEUE_ALERT_QUEUE_DEPTH="-1")
    assert negative.returncode == 78 and "JOBQUEUE_ALERT_QUEUE_DEPTH: threshold" in negative.stderr
    assert alert_tables(db) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("rules", "set", "disk", "--kind", "queue_depth"), "threshold: is required"),
        (("rules", "set", "queue_depth", "--threshold", "-3"), "threshold: must be at least 0"),
        (("rules", "set", "queue_depth", "--threshold", "many"), "threshold: must be a number"),
        (("rules", "set", "worker_down", "--queue", "q", "--threshold", "5"), "queue: worker_down rules apply"),
        (("channels", "add", "s", "slack", '{"url": "ftp://x.example.com"}'), "config.url: must be an http"),
        (("channels", "add", "m", "email", EMAIL.replace("2525", "0")), "config.port: must be an integer"),
        (("channels", "add", "m", "email", EMAIL[:-1] + ', "username": "u", "password": "p"}'), "config.password:"),
        (("channels", "add", "w", "webhook", '{"url": "https://x.example.com", "secret": "s"}'), "config.secret:"),
        (("channels", "add", "p", "pagerduty", '{"routing_key": "abc"}'), "config.routing_key:"),
        (("channels", "add", "p", "pagerduty", "[1]"), "config: must be a JSON object"),
        (("channels", "test", "nope"), "name: no alert channel"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(
    db_url: str, db: psycopg.Connection[Any], args: tuple[str, ...], needle: str
) -> None:
    before = alert_tables(db)
    proc = run(db_url, "alerts", *args)
    assert proc.returncode in (65, 66), (proc.returncode, proc.stderr)
    assert needle in proc.stderr, proc.stderr
    assert alert_tables(db) == before
