"""`jobqueue bench --only alerts`: time from an alert's condition to its notification received.

One ordinary worker at default settings (its reconcile every 5 s runs alert detection; it
claims ``jobqueue.alerts`` besides its queue) and the default ``worker_down`` rule (fires when
a registered worker's last heartbeat is older than 60 s). Twenty workers (3 with --quick) are
registered half a second apart and never heartbeat again; each becomes an incident. A signed
webhook channel posts to a receiver in this process, which notes when each trigger arrives.

The condition begins when the rule's threshold is crossed: the fake worker's
``last_seen_at`` + the threshold, by the database clock (the receiver runs on the same
machine, so the same clock). The figure is received - condition: detection (up to one
reconcile interval), enqueue -> claim (NOTIFY), and the send, p50 and p99.

Registered with ``@scenario("alerts", on_demand=True)``; the rows are ordinary bench rows.
"""

from __future__ import annotations

import json
import os
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
INCIDENTS = 20
QUICK_INCIDENTS = 3
#: Seconds between the fake workers' registrations, so the incidents fall at different
#: points of the reconcile cycle.
STAGGER_S = 0.5
SECRET_ENV = "JOBQUEUE_BENCH_WEBHOOK_SECRET"


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


@scenario(SCENARIO, on_demand=True)
def run_scenario(bench: Bench, budget_s: float) -> None:
    from jobqueue.worker import CONCURRENCY

    incidents = QUICK_INCIDENTS if bench.config.quick else INCIDENTS
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

    rows = [r for r in bench.rows if r.scenario == SCENARIO]
    if not rows:
        return
    table = Table(title="Alerts", title_justify="left")
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
