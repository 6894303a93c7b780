"""OPS-03: `jobqueue exporter` scraped over HTTP on loopback, as Prometheus would.

The real CLI in a subprocess; every figure is checked against rows the test put in the
database; a payload secret never reaches the exposition (SEC-06); with the database gone
a scrape answers ``jobqueue_up 0`` within the scrape timeout instead of hanging.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.rows
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobqueue.exporter import COUNTERS, SCRAPE_DB_TIMEOUT_S
from tests.chaos.harness import wait_for
from tests.conftest import ROOT
from tests.support.cli import cli_env, run_cli
from tests.support.promtool import PromtoolUnavailable, promtool_binary
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


# -- issue 17: counters, histograms, workers, alerts -----------------------------------------

COUNTER_NAMES = [f"jobqueue_jobs_{k}_total" for k in COUNTERS]


def counters_of(m: Samples, queue: str, type: str) -> dict[str, float]:
    return {name: m[q(name, queue=queue, type=type)] for name in COUNTER_NAMES}


def churn(conn: psycopg.Connection[Any]) -> None:
    """On queue 'mail', type 't': 6 enqueued, 3 completed, 1 retried, 1 dead-lettered, 1 cancelled."""
    for _ in range(5):
        conn.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'mail')")
    got = conn.execute("SELECT id, token FROM jobqueue.claim(ARRAY['mail'], 'w', 5)").fetchall()
    conn.execute(
        "SELECT * FROM jobqueue.complete_many(%s, %s)", ([g["id"] for g in got[:3]], [g["token"] for g in got[:3]])
    )
    conn.execute("SELECT jobqueue.fail(%s, %s, 'x')", (got[3]["id"], got[3]["token"]))
    conn.execute("SELECT jobqueue.fail(%s, %s, 'x', 'permanent')", (got[4]["id"], got[4]["token"]))
    waiting = conn.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'mail') AS id").fetchone()
    conn.execute("SELECT jobqueue.cancel(%s)", (waiting["id"],))  # type: ignore[index]


def test_counters_histograms_and_workers_over_http(db: psycopg.Connection[Any], db_url: str, exporter: Any) -> None:
    churn(db)
    db.execute("SELECT jobqueue.register_worker('w1', concurrency => 4)")
    db.execute("SELECT jobqueue.register_worker('w2', concurrency => 4)")
    db.execute("SELECT jobqueue.unregister_worker('w2')")  # stopped: not counted
    for _ in range(2):
        db.execute("SELECT jobqueue.enqueue('busy', '{}', queue => 'mail')")
    db.execute("SELECT * FROM jobqueue.claim(ARRAY['mail'], 'w1', 2, types => ARRAY['busy'])")

    port = exporter(db_url)
    text, m = scrape(port)
    expected = {"enqueued": 6, "completed": 3, "failed": 2, "retried": 1, "dead_lettered": 1, "cancelled": 1}
    assert counters_of(m, "mail", "t") == {f"jobqueue_jobs_{k}_total": v for k, v in expected.items()}
    assert m[q("jobqueue_jobs_running", queue="mail", type="busy")] == 2
    assert "# TYPE jobqueue_jobs_completed_total counter" in text
    assert "# TYPE jobqueue_job_queue_time_seconds histogram" in text
    assert "# TYPE jobqueue_job_run_time_seconds histogram" in text
    for hist in ("jobqueue_job_queue_time_seconds", "jobqueue_job_run_time_seconds"):
        assert m[q(f"{hist}_count", queue="mail", type="t")] == 3
        assert m[q(f"{hist}_bucket", queue="mail", type="t", le="+Inf")] == 3
        assert m[q(f"{hist}_sum", queue="mail", type="t")] >= 0
        les = sorted(float(dict(k[1])["le"]) for k in m if k[0] == f"{hist}_bucket" and dict(k[1])["type"] == "t")
        assert les[:-1] == sorted(les[:-1]) and les[-1] == float("inf") and len(les) == 17
    assert m[q("jobqueue_workers", status="healthy")] == 1
    assert m[q("jobqueue_worker_slots")] == 4
    assert m[q("jobqueue_worker_busy_slots")] == 2
    assert m[q("jobqueue_worker_utilization_ratio")] == 0.5
    assert not any(k[0] == "jobqueue_alerts_open" for k in m)  # no incident open

    # history pruned, counters folded by reconcile: the counters do not move
    db.execute("UPDATE jobqueue.setting SET value = '1' WHERE key = 'history_retention_s'")
    db.execute("UPDATE jobqueue.job_history SET finished_at = now() - interval '1 hour'")
    summary = db.execute("SELECT jobqueue.reconcile() AS r").fetchone()["r"]  # type: ignore[index]
    assert summary["history_pruned"] == 4 and summary["counters_compacted"] > 0
    _, after = scrape(port)
    assert counters_of(after, "mail", "t") == counters_of(m, "mail", "t")
    assert after[q("jobqueue_job_run_time_seconds_count", queue="mail", type="t")] == 3


def worker_down(conn: psycopg.Connection[Any], worker: str) -> None:
    """A real incident: a registered worker missed its heartbeats, and reconcile detects it."""
    conn.execute("SELECT jobqueue.register_worker(%s, concurrency => 2)", (worker,))
    conn.execute(
        "UPDATE jobqueue.worker SET last_seen_at = now() - interval '5 minutes' WHERE worker_id = %s", (worker,)
    )
    conn.execute("SELECT jobqueue.reconcile()")


def test_open_alerts_by_rule_and_severity(db: psycopg.Connection[Any], db_url: str, exporter: Any) -> None:
    for worker in ("w1", "w2", "w3"):
        worker_down(db, worker)
    db.execute("SELECT jobqueue.ack_alert(id, 'me') FROM jobqueue.alerts WHERE subject = 'w2'")  # still open
    db.execute("SELECT jobqueue.resolve_alert(id, 'me') FROM jobqueue.alerts WHERE subject = 'w3'")  # not open
    port = exporter(db_url)
    _, m = scrape(port)
    assert m[q("jobqueue_alerts_open", rule="worker_down", severity="critical")] == 2
    db.execute("SELECT jobqueue.resolve_alert(id, 'me') FROM jobqueue.alerts WHERE state <> 'resolved'")
    _, after = scrape(port)
    assert not any(k[0] == "jobqueue_alerts_open" for k in after)


def test_open_alerts_are_absent_on_a_schema_without_the_alerts_view(
    db: psycopg.Connection[Any], db_url: str, exporter: Any
) -> None:
    db.execute("DROP VIEW jobqueue.alerts CASCADE")  # a schema before the alerting revision has none
    _, m = scrape(exporter(db_url))
    assert m[q("jobqueue_up")] == 1 and not any(k[0] == "jobqueue_alerts_open" for k in m)


@pytest.fixture(scope="module")
def restartable_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL of this module's own, which the test crash-restarts."""
    from jobqueue.embedded import EmbeddedServer

    server = EmbeddedServer(home=tmp_path_factory.mktemp("pg"))
    server.ensure_running()
    yield server
    server.stop("immediate")


def test_counters_stay_monotonic_across_a_postgres_crash_restart(restartable_server: Any, exporter: Any) -> None:
    from jobqueue import migrations
    from jobqueue.config import DatabaseTarget

    with psycopg.connect(restartable_server.ensure_running(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE counters_restart")
    url = restartable_server.url("counters_restart")
    migrations.upgrade(DatabaseTarget(url, "restart test"))
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        churn(conn)
        conn.execute("SELECT jobqueue.reconcile()")  # some counts folded into totals, ...
        churn(conn)  # ... some still deltas when the server crashes
    port = exporter(url)
    _, before = scrape(port)
    assert before[q("jobqueue_jobs_completed_total", queue="mail", type="t")] == 6

    restartable_server.stop("immediate")
    restartable_server.ensure_running()
    wait_for(lambda: scrape(port)[1].get(q("jobqueue_up")) == 1, 60, "the exporter to read the database again")
    _, after = scrape(port)
    assert counters_of(after, "mail", "t") == counters_of(before, "mail", "t")
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        churn(conn)
    _, later = scrape(port)
    for name in COUNTER_NAMES:
        assert later[q(name, queue="mail", type="t")] > after[q(name, queue="mail", type="t")], name


# -- the shipped Grafana dashboard and Prometheus rules name real metrics ----------------------

DASHBOARD = ROOT / "docs" / "grafana" / "jobqueue.json"
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
METRIC_NAME = re.compile(r"\bjobqueue_[a-z_]+\b")


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"]]
    assert len(exprs) > 20
    return exprs


def rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 8
    return exprs


def test_dashboard_and_rules_name_only_metrics_a_real_scrape_has(
    db: psycopg.Connection[Any], db_url: str, exporter: Any
) -> None:
    churn(db)  # counters and histograms have rows
    db.execute("SELECT jobqueue.register_worker('w1', concurrency => 2)")  # utilization has slots
    worker_down(db, "w2")  # an open incident
    text, m = scrape(exporter(db_url))
    # sample names and family names (jobqueue_jobs_enqueued_total, jobqueue_job_run_time_seconds)
    scraped = {name for name, _ in m} | {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    used = {name for expr in dashboard_exprs() + rule_exprs() for name in METRIC_NAME.findall(expr)}
    assert used - scraped == set()
    assert {"jobqueue_jobs_completed_total", "jobqueue_job_queue_time_seconds_bucket"} <= used


def test_rules_and_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    try:
        promtool = promtool_binary()
    except PromtoolUnavailable as exc:
        pytest.skip(str(exc))
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the dashboard's PromQL as recording rules (Grafana's variables given plain values)
    records = [
        {
            "record": f"jobqueue:panel_{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$queue", ".*").replace("$type", ".*"),
        }
        for i, e in enumerate(dashboard_exprs())
        if not e.startswith("label_values(")
    ]
    panels = tmp_path / "panels.yml"
    panels.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]}))
    checked = subprocess.run([promtool, "check", "rules", str(panels)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
