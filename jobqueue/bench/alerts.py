"""`jobqueue bench --only alerts`: what alert detection costs, and how soon a notification arrives.

**Detection cost.** 50 rules over 10 queues (the 10 built-in defaults plus 4 overrides per
queue: depth, oldest runnable age, error rate, stuck jobs), a backlog of 10,000 jobs per
queue (1,000 with --quick), a day of history (200,000 completed jobs, 20,000 failed
attempts; a tenth with --quick) and, before each timed call, a reconcile interval's new
traffic (1,000 completions, 100 failures). Figures: the detection step alone
(``jobqueue.check_alerts()``: tally the new outcomes, observe every rule, update
incidents), a whole ``reconcile()``, and a reconcile whose detection step is skipped
(another session holds its lock) on the same data; the first detection (which tallies the
whole day once) separately.

**Time from condition to notification received.** One ordinary worker at default settings
(its reconcile every 5 s runs detection; it claims ``jobqueue.alerts`` besides its queue)
and the default ``worker_down`` rule (fires when a registered worker's last heartbeat is
older than 60 s). Twenty workers (3 with --quick) are registered half a second apart and
never heartbeat again; each becomes an incident. A signed webhook channel posts to a
receiver in this process, which notes when each trigger arrives. The condition begins when
the rule's threshold is crossed: the fake worker's ``last_seen_at`` + the threshold, by the
database clock (the receiver runs on the same machine, so the same clock). The figure is
received - condition: detection (up to one reconcile interval), enqueue -> claim (NOTIFY),
and the send, p50 and p99.

Registered with ``@scenario("alerts", on_demand=True)``; the rows are ordinary bench rows.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from psycopg.types.json import Jsonb

from jobqueue.bench.config import START_TIMEOUT_S, Measured
from jobqueue.bench.core import Bench
from jobqueue.bench.latency import percentiles, wait_listening
from jobqueue.bench.registry import scenario, table

SCENARIO = "alerts"
QUEUES = 10
BACKLOG = 10_000
HISTORY = 200_000
FAILURES = 20_000
CALLS = 30
QUICK_DIVISOR = 10
TRAFFIC_COMPLETED = 1_000
TRAFFIC_FAILED = 100
INCIDENTS = 20
QUICK_INCIDENTS = 3
#: Seconds between the fake workers' registrations, so the incidents fall at different
#: points of the reconcile cycle.
STAGGER_S = 0.5
SECRET_ENV = "JOBQUEUE_BENCH_WEBHOOK_SECRET"


@scenario(SCENARIO, on_demand=True)
def run_scenario(bench: Bench, budget_s: float) -> None:
    quick = bench.config.quick
    div = QUICK_DIVISOR if quick else 1
    detection_cost(bench, BACKLOG // div, HISTORY // div, FAILURES // div, CALLS // (3 if quick else 1))
    notify_lag(bench, QUICK_INCIDENTS if quick else INCIDENTS)


def detection_cost(bench: Bench, backlog: int, history: int, failures: int, calls: int) -> None:
    bench.scratch.reset()
    bench.begin(f"alerts: detection with 50 rules over {QUEUES} queues", calls)
    with bench.scratch.connect() as conn:
        conn.execute("UPDATE jobqueue.setting SET value = '0' WHERE key = 'alert_tally_lag_s'")
        for q in range(QUEUES):
            queue = f"bench-{q}"
            for name, settings in (
                ("queue_depth", '{"threshold": 50000}'),
                ("oldest_runnable_age", '{"threshold": 86400}'),
                ("error_rate_1h", '{"threshold": 0.9}'),
                ("job_stuck", '{"threshold": 7200}'),
            ):
                conn.execute("SELECT jobqueue.set_alert_rule(%s, %s, %s)", (name, settings, queue))
        rules = conn.execute("SELECT count(*) FROM jobqueue.alert_rule").fetchone()
        # as the owner, in bulk: a backlog per queue, a day of history and of failed attempts
        conn.execute(
            "INSERT INTO jobqueue.job (queue, type, payload, max_attempts) "
            "SELECT 'bench-' || (i %% %s), 'bench.t' || (i %% 5), '{}', 25 FROM generate_series(1, %s) AS i",
            (QUEUES, backlog * QUEUES),
        )
        conn.execute(
            "INSERT INTO jobqueue.job_history (id, queue, type, payload, state, max_attempts, attempt, finished_at) "
            "SELECT nextval('jobqueue.job_id_seq'), 'bench-' || (i %% %s), 'bench.t' || (i %% 5), '{}', 'completed', "
            "25, 1, now() - ((%s - i)::float8 / %s) * interval '1 day' FROM generate_series(1, %s) AS i",
            (QUEUES, history, history, history),
        )
        conn.execute(
            "INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state, at, detail) "
            "SELECT -i, 'bench-' || (i %% %s), 'processing', 'retrying', "
            "now() - ((%s - i)::float8 / %s) * interval '1 day', '{}' FROM generate_series(1, %s) AS i",
            (QUEUES, failures, failures, failures),
        )
        conn.execute("VACUUM ANALYZE jobqueue.job, jobqueue.job_history, jobqueue.job_event")
        t0 = time.perf_counter()
        conn.execute("SELECT jobqueue.check_alerts()")
        first_ms = (time.perf_counter() - t0) * 1000
        detect_ms: list[float] = []
        reconcile_ms: list[float] = []
        bare_ms: list[float] = []
        # reconcile without detection, for comparison: another session holds detection's lock,
        # so the step returns at once ("busy") as it does under a concurrent reconcile
        with bench.scratch.connect() as holder:
            holder.autocommit = False
            holder.execute("SELECT pg_advisory_xact_lock(hashtext('jobqueue._detect_alerts'))")
            for _ in range(calls):
                traffic(conn)
                t0 = time.perf_counter()
                conn.execute("SELECT jobqueue.reconcile()")
                bare_ms.append((time.perf_counter() - t0) * 1000)
            holder.rollback()
        for i in range(calls):
            traffic(conn)
            t0 = time.perf_counter()
            conn.execute("SELECT jobqueue.check_alerts()")
            detect_ms.append((time.perf_counter() - t0) * 1000)
            traffic(conn)
            t0 = time.perf_counter()
            conn.execute("SELECT jobqueue.reconcile()")
            reconcile_ms.append((time.perf_counter() - t0) * 1000)
            bench.advance(i + 1)
        tally = conn.execute("SELECT count(*) FROM jobqueue.alert_tally").fetchone()
    shape = {
        "rules": int(rules[0]) if rules else 0,
        "queues": QUEUES,
        "backlog": backlog * QUEUES,
        "history_rows": history,
        "failure_events": failures,
        "tally_rows": int(tally[0]) if tally else 0,
        "traffic_per_call": f"{TRAFFIC_COMPLETED} completed + {TRAFFIC_FAILED} failed",
    }
    for key, label, values in (
        ("alerts.detect", "alert detection step (check_alerts), 50 rules / 10 queues", detect_ms),
        ("alerts.reconcile", "whole reconcile() including detection", reconcile_ms),
        ("alerts.reconcile_without", "reconcile() with detection skipped (same data)", bare_ms),
    ):
        ordered = sorted(values)
        extra: dict[str, Any] = dict(shape)
        extra.update(
            calls=len(values),
            p50_ms=round(statistics.median(ordered), 2),
            max_ms=round(ordered[-1], 2),
            mean_ms=round(statistics.fmean(ordered), 2),
            first_detection_ms=round(first_ms, 1),
        )
        bench.record(
            SCENARIO, key, label, "jobqueue", 1, len(values), Measured(len(values), sum(values) / 1000, False, extra)
        )


def traffic(conn: Any) -> None:
    """One reconcile interval's outcomes, finished now."""
    conn.execute(
        "INSERT INTO jobqueue.job_history (id, queue, type, payload, state, max_attempts, attempt, finished_at) "
        "SELECT nextval('jobqueue.job_id_seq'), 'bench-' || (i %% %s), 'bench.t' || (i %% 5), '{}', 'completed', "
        "25, 1, now() FROM generate_series(1, %s) AS i",
        (QUEUES, TRAFFIC_COMPLETED),
    )
    conn.execute(
        "INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state, detail) "
        "SELECT -i, 'bench-' || (i %% %s), 'processing', 'retrying', '{}' FROM generate_series(1, %s) AS i",
        (QUEUES, TRAFFIC_FAILED),
    )


class _Receiver:
    """A webhook receiver on loopback: the arrival time of each trigger, by incident key."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                doc = json.loads(body)
                if doc.get("event") == "trigger":
                    with receiver.lock:
                        receiver.arrived.setdefault(str(doc["incident"]["dedupe_key"]), at)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="bench-alert-receiver", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    def count(self) -> int:
        with self.lock:
            return len(self.arrived)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notify_lag(bench: Bench, incidents: int) -> None:
    from jobqueue.worker import CONCURRENCY

    bench.scratch.reset()
    receiver = _Receiver()
    os.environ.setdefault(SECRET_ENV, "bench-secret")  # the worker reads it (inherited environment)
    bench.begin(f"alerts: worker_down -> webhook received, {incidents} incidents (1 worker, defaults)", incidents)
    workers = bench.spawn_workers(1, CONCURRENCY, burst=False)
    try:
        wait_listening(bench, workers)
        with bench.scratch.connect() as conn:
            conn.execute(
                "SELECT jobqueue.add_alert_channel('bench-hook', 'webhook', %s, %s)",
                (Jsonb({"url": receiver.url, "secret_env": SECRET_ENV}), Jsonb({"kinds": ["worker_down"]})),
            )
            threshold = conn.execute(
                "SELECT threshold FROM jobqueue.alert_rule WHERE name = 'worker_down' AND builtin"
            ).fetchone()
            threshold_s = float(threshold[0]) if threshold else 60.0
            for i in range(incidents):
                conn.execute("SELECT jobqueue.register_worker(%s, 'bench', 0)", (f"bench-gone-{i}",))
                time.sleep(STAGGER_S)
            deadline = time.monotonic() + threshold_s + 60 + START_TIMEOUT_S
            while time.monotonic() < deadline and receiver.count() < incidents:
                bench.advance(receiver.count())
                time.sleep(0.2)
            rows = conn.execute(
                "SELECT i.dedupe_key, extract(epoch FROM w.last_seen_at)::float8 + %s "
                "FROM jobqueue.alerts i JOIN jobqueue.worker w ON i.subject = w.worker_id "
                "WHERE i.rule = 'worker_down' AND w.worker_id LIKE 'bench-gone-%%'",
                (threshold_s,),
            ).fetchall()
    finally:
        workers.stop()
        receiver.stop()
    lags = sorted((receiver.arrived[key] - float(began)) * 1000 for key, began in rows if key in receiver.arrived)
    extra = percentiles(lags)
    extra.update(
        incidents=incidents,
        received=len(lags),
        threshold_s=threshold_s,
        worker="1 worker, default settings (reconcile every 5 s, heartbeat 10 s)",
    )
    bench.record(
        SCENARIO,
        "alerts.notify_lag",
        "worker_down: condition -> webhook received",
        "jobqueue",
        1,
        incidents,
        Measured(len(lags), float(len(lags)), len(lags) < incidents, extra=extra),
    )


@table
def print_table(bench: Bench, console: Any) -> None:
    from rich.table import Table

    rows = [r for r in bench.rows if r.scenario == SCENARIO and r.key == "alerts.notify_lag"]
    if not rows:
        return
    table = Table(title="Alerts: condition -> notification", title_justify="left")
    for heading in ("figure", "result", "detail"):
        table.add_column(heading)
    for r in rows:
        e = r.extra
        table.add_row(
            r.label,
            f"p50 {e.get('p50_ms')} ms, p99 {e.get('p99_ms')} ms",
            f"{e.get('received')} of {e.get('incidents')} incidents, max {e.get('max_ms')} ms, "
            f"rule threshold {e.get('threshold_s')} s; {e.get('worker')}",
        )
    console.print(table)
