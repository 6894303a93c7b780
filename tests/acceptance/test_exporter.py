"""OPS-03: `jobqueue exporter` scraped over HTTP on loopback, as Prometheus would.

The real CLI in a subprocess; every figure is checked against rows the test put in the
database; a payload secret never reaches the exposition (SEC-06); with the database gone
a scrape answers ``jobqueue_up 0`` within the scrape timeout instead of hanging.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobqueue.exporter import SCRAPE_DB_TIMEOUT_S
from tests.chaos.harness import wait_for
from tests.conftest import ROOT
from tests.support.cli import cli_env, run_cli
from tests.support.proxy import proxied

pytestmark = pytest.mark.timeout(120)
SECRET = "sk_live_exporter_sentinel_5e1f"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    procs: list[subprocess.Popen[str]] = []
    log_path = tmp_path / "exporter.log"

    def start(url: str) -> int:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "--database-url", url, "exporter", "--port", str(port)],
            cwd=ROOT,
            env=cli_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)

        def answers() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                scrape(port)
                return True
            except OSError:
                return False

        wait_for(answers, 30, "the exporter to listen")
        return port

    with open(log_path, "w") as log:
        yield start
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    for proc in procs:
        assert proc.returncode == 0, log_path.read_text()  # SIGTERM is a clean stop


def q(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_scrape_shows_every_ops03_figure(db: psycopg.Connection[Any], db_url: str, exporter: Any) -> None:
    ids = [
        db.execute("SELECT jobqueue.enqueue('t', %s, queue => 'mail') AS id", (f'{{"k": "{SECRET}"}}',)).fetchone()[
            "id"
        ]
        for _ in range(4)
    ]
    db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'mail', delay => '1 hour')")
    claimed = db.execute("SELECT id, token FROM jobqueue.claim(ARRAY['mail'], 'w', 2)").fetchall()
    db.execute("SELECT jobqueue.fail(%s, %s, %s, 'permanent')", (claimed[0]["id"], claimed[0]["token"], SECRET))
    db.execute(
        "UPDATE jobqueue.job SET lease_expires_at = now() - interval '5 minutes' WHERE id = %s", (claimed[1]["id"],)
    )
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '10 minutes' WHERE id = %s", (ids[2],))
    db.execute("SELECT jobqueue.pause_queue('mail')")

    port = exporter(db_url)
    text, m = scrape(port)
    assert m[q("jobqueue_up")] == 1
    assert m[q("jobqueue_jobs", queue="mail", state="pending")] == 2  # depth
    assert m[q("jobqueue_jobs", queue="mail", state="scheduled")] == 1
    assert m[q("jobqueue_jobs", queue="mail", state="processing")] == 1  # running
    assert m[q("jobqueue_dead_letters", queue="mail")] == 1  # DLQ depth
    assert m[q("jobqueue_oldest_pending_age_seconds", queue="mail")] >= 600  # oldest available age
    assert m[q("jobqueue_queue_paused", queue="mail")] == 1
    assert m[q("jobqueue_health_value", check="expired_leases")] == 1  # expired-lease count
    assert m[q("jobqueue_health_value", check="lease_overdue_s")] >= 300
    assert m[q("jobqueue_health_alert", check="lease_overdue_s")] == 1
    assert m[q("jobqueue_health_alert", check="reconcile_last_run_age_s")] == 1  # never ran: no value
    assert q("jobqueue_health_value", check="reconcile_last_run_age_s") not in m
    assert q("jobqueue_health_value", check="notify_queue_usage") in m  # pg_notification_queue_usage
    assert q("jobqueue_health_value", check="oldest_xmin_age_s") in m  # oldest xmin age
    assert m[q("jobqueue_health_threshold", check="oldest_xmin_age_s")] == 300
    assert q("jobqueue_health_threshold", check="dead_letters") not in m  # off by default
    assert SECRET not in text  # SEC-06: no payload or error text in labels or values

    db.execute("SELECT jobqueue.reconcile()")
    _, after = scrape(port)  # read at each scrape: reconcile's work shows at once
    assert after[q("jobqueue_health_value", check="expired_leases")] == 0
    assert 0 <= after[q("jobqueue_health_value", check="reconcile_last_run_age_s")] < 60
    assert after[q("jobqueue_health_alert", check="reconcile_last_run_age_s")] == 0


def test_scrape_with_the_database_gone_answers_down_quickly(db_url: str, exporter: Any) -> None:
    proxy, url = proxied(db_url)
    try:
        port = exporter(url)
        assert scrape(port)[1][q("jobqueue_up")] == 1
        proxy.refuse()
        began = time.monotonic()
        _, down = scrape(port)
        took = time.monotonic() - began
        assert down == {q("jobqueue_up"): 0}, down
        print(f"scrape with the database gone answered in {took:.2f} s")
        # docs/cli.md and docs/guarantees.md: within its 5 s wait for the database plus 1 s (Prometheus waits 10 s).
        assert took <= SCRAPE_DB_TIMEOUT_S + 1.0, took
        proxy.heal()
        wait_for(lambda: scrape(port)[1].get(q("jobqueue_up")) == 1, 15, "the exporter to read the database again")
    finally:
        proxy.close()


def test_exporter_bad_port_and_once(db_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("exporter", *args, database_url=db_url, timeout=60)

    bad = run("--port", "70000")
    assert bad.returncode == 2 and "--port" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = run("--port", str(taken.getsockname()[1]))
    assert busy.returncode == 78, busy.stderr
    assert busy.stderr.strip().startswith("jobqueue: error: port: cannot listen on 127.0.0.1:"), busy.stderr
    once = run("--once")
    assert once.returncode == 0, once.stderr
    assert "jobqueue_up 1.0" in once.stdout
