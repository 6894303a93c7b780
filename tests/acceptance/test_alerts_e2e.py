"""End to end (issue 17): a worker stops heartbeating (SIGSTOP) -> reconcile, run by another
ordinary worker, opens a worker_down incident -> one email and one PagerDuty trigger arrive
at real receivers on loopback -> the alert is acknowledged -> a PagerDuty acknowledge
arrives -> the worker resumes (SIGCONT) -> the resolve arrives.

Both workers are real ``python -m jobqueue worker`` processes; the notifier claims
``jobqueue.alerts`` and runs reconcile every half second; the victim heartbeats its row
every half second and runs no reconcile and no notifications (``--no-alerts``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cli import cli_env, run_cli
from tests.support.receivers import HttpReceiver, SmtpReceiver

APP = "tests.chaos.chaos_app:jq"
ROOT = Path(__file__).resolve().parents[2]
PD_KEY_ENV = "JQ_E2E_PD_ROUTING_KEY"
#: worker_down with thresholds a test can wait for: fires 3 s after the last heartbeat,
#: clears under 2 s, resolves as soon as it is clear.
RULE = {"threshold": 3, "clear_threshold": 2, "resolve_after_s": 0}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(db_url: str, name: str, *options: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed at the end of the test
        logs.append(log)
        command = [
            sys.executable,
            "-m",
            "jobqueue",
            "--database-url",
            db_url,
            "worker",
            "--app",
            APP,
            "--name",
            name,
            "--heartbeat-interval",
            "0.5",
            "--poll-interval",
            "0.2",
            *options,
        ]
        env = cli_env({PD_KEY_ENV: "e2e-routing-key", "LEDGER_URL": db_url})
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(10)
    for log in logs:
        log.close()


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.1)


def ack(db_url: str, alert_id: int) -> None:
    """``jobqueue alerts ack ID``, the CLI an operator runs."""
    result = run_cli("alerts", "ack", str(alert_id), "--by", "e2e-operator", database_url=db_url)
    assert result.returncode == 0, result.stderr


def test_worker_down_pages_is_acknowledged_and_resolves(
    db_url: str,
    db: psycopg.Connection[Any],
    spawn: Callable[..., subprocess.Popen[bytes]],
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
) -> None:
    db.execute("SELECT jobqueue.set_alert_rule('worker_down', %s)", (json.dumps(RULE),))
    route = json.dumps({"kinds": ["worker_down"]})
    email = {"host": "127.0.0.1", "port": smtp_receiver.port, "from": "jobqueue@example.com", "to": ["ops@example.com"]}
    pagerduty = {"routing_key_env": PD_KEY_ENV, "url": http_receiver.url("/pagerduty")}
    db.execute("SELECT jobqueue.add_alert_channel('ops-mail', 'email', %s, %s)", (json.dumps(email), route))
    db.execute("SELECT jobqueue.add_alert_channel('ops-pager', 'pagerduty', %s, %s)", (json.dumps(pagerduty), route))

    victim = spawn(db_url, "victim", "--no-alerts", "--reconcile-interval", "0")
    spawn(db_url, "notifier", "--queues", "jobqueue.alerts", "--reconcile-interval", "0.5")
    wait_until(
        "both workers registered",
        lambda: db.execute("SELECT count(*) AS n FROM jobqueue.worker WHERE stopped_at IS NULL").fetchone()["n"] == 2,
    )

    queues = {r["worker_id"]: r["queues"] for r in db.execute("SELECT worker_id, queues FROM jobqueue.worker")}
    assert queues == {"victim": ["default"], "notifier": ["jobqueue.alerts"]}  # --no-alerts: not claimed

    victim.send_signal(signal.SIGSTOP)
    mail = smtp_receiver.wait_for(1, timeout=60)[0]
    trigger = http_receiver.wait_for(1, timeout=60)[0].json
    alert = db.execute("SELECT * FROM jobqueue.alerts WHERE rule = 'worker_down'").fetchone()
    assert alert is not None and alert["state"] == "firing"
    assert "victim" in alert["dedupe_key"]
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == alert["dedupe_key"]
    assert trigger["routing_key"] == "e2e-routing-key" and trigger["payload"]["severity"] == "critical"
    assert str(mail.message["Subject"]).strip().startswith("[critical] FIRING: worker victim")

    ack(db_url, alert["id"])
    acknowledge = http_receiver.wait_for(2, timeout=60)[1].json
    assert acknowledge["event_action"] == "acknowledge" and acknowledge["dedup_key"] == alert["dedupe_key"]
    acked = db.execute("SELECT state, acknowledged_by FROM jobqueue.alerts WHERE id = %s", (alert["id"],)).fetchone()
    assert acked == {"state": "acknowledged", "acknowledged_by": "e2e-operator"}

    victim.send_signal(signal.SIGCONT)
    resolve = http_receiver.wait_for(3, timeout=60)[2].json
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == alert["dedupe_key"]
    mails = smtp_receiver.wait_for(3, timeout=60)
    subjects = [str(m.message["Subject"]).strip().split(":")[0] for m in mails]
    assert subjects == ["[critical] FIRING", "[critical] ACKNOWLEDGED", "[critical] RESOLVED"]

    # exactly one of each: no duplicate trigger from the notifier's many reconcile runs
    assert [r.json["event_action"] for r in http_receiver.requests] == ["trigger", "acknowledge", "resolve"]
    assert len(smtp_receiver.mails) == 3

    def states() -> dict[str, int]:
        rows = db.execute(
            "SELECT state, count(*) AS n FROM jobqueue.jobs WHERE queue = 'jobqueue.alerts' GROUP BY state"
        ).fetchall()
        return {r["state"]: r["n"] for r in rows}

    # the six notifications were jobs, acknowledged like any (a moment after the receivers got them)
    wait_until("the six notification jobs completed", lambda: states() == {"completed": 6}, timeout=30)
    assert os.environ.get(PD_KEY_ENV) is None  # the secret came from the worker's environment only
