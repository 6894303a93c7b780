"""`jobqueue bench --only web`: the HTTP API (`jobqueue serve`, the web extra), two figures.

* **list 50 by state and queue** on 1,000,000 jobs (50,000 with --quick; 95 % finished,
  in job_history, 5 % waiting, over 20 queues): ``GET /api/v1/jobs?state=..&queue=..&limit=50``
  as an operator token, server time from the app's ``Server-Timing`` header (database
  included), p50 and p99; without the total, and with the capped total (``total=true``).
* **POST /jobs throughput**: 4 client processes, one job per request over kept-alive
  connections, against ``enqueue()`` in 4 processes, the two by turns in 4 rounds of the
  same run (ratio of the totals; target at least 60 %); and the server process's CPU per
  POST (``/proc``, Linux), the figure that moves with the server's code when the machine's
  speed does not hold still.

The server is a real ``jobqueue serve`` subprocess logging in as ``jobqueue_web`` (made
LOGIN on the bench's server). Registered with ``@scenario("web", on_demand=True)``.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from jobqueue.bench.config import START_TIMEOUT_S, BenchError, Measured
from jobqueue.bench.core import Bench
from jobqueue.bench.cpu import proc_times
from jobqueue.bench.latency import percentiles
from jobqueue.bench.processes import split
from jobqueue.bench.registry import scenario, table
from jobqueue.bench.scratch import database_url
from jobqueue.bench.statements import QUEUE

SCENARIO = "web"
ROWS = 1_000_000
QUICK_ROWS = 50_000
QUEUES = 20
LIST_REQUESTS = 400
QUICK_LIST_REQUESTS = 80
POSTS = 8_000
QUICK_POSTS = 1_000
CLIENTS = 4
#: POST /jobs and its enqueue() reference run by turns, this many rounds each (post_throughput).
ROUNDS = 4
LIST_P99_TARGET_MS = 20.0
POST_RATIO_TARGET = 0.60


@scenario(SCENARIO, on_demand=True)
def run_scenario(bench: Bench, budget_s: float) -> None:
    quick = bench.config.quick
    rows = QUICK_ROWS if quick else ROWS
    bench.scratch.reset()
    _load(bench, rows)
    with _Server(bench) as server:
        list_latency(bench, server, rows, QUICK_LIST_REQUESTS if quick else LIST_REQUESTS)
        post_throughput(bench, server, QUICK_POSTS if quick else POSTS, budget_s)


def _load(bench: Bench, rows: int) -> None:
    """As the scratch owner, in bulk: finished jobs in job_history, waiting ones in job."""
    bench.begin(f"web: loading {rows:,} jobs", None)
    live = rows // 20
    with bench.scratch.connect() as conn:
        conn.execute(
            "INSERT INTO jobqueue.job_history (id, queue, type, state, payload, max_attempts, attempt, finished_at, "
            "created_at) SELECT nextval('jobqueue.job_id_seq'), 'q' || (g %% %s), 'bench.noop', 'completed', "
            "jsonb_build_object('i', g), 1, 1, now() - (g || ' ms')::interval, now() - (g || ' ms')::interval "
            "FROM generate_series(1, %s) AS g",
            (QUEUES, rows - live),
        )
        conn.execute(
            "INSERT INTO jobqueue.job (id, queue, type, state, payload, max_attempts) "
            "SELECT nextval('jobqueue.job_id_seq'), 'q' || (g %% %s), 'bench.noop', 'pending', "
            "jsonb_build_object('i', g), 25 FROM generate_series(1, %s) AS g",
            (QUEUES, live),
        )
        conn.execute("INSERT INTO jobqueue.queue (name) SELECT 'q' || g FROM generate_series(0, %s) AS g "
                     "ON CONFLICT DO NOTHING", (QUEUES - 1,))  # fmt: skip
    bench.vacuum("jobqueue.job", "jobqueue.job_history", "jobqueue.dead_letter")


class _Server:
    """``jobqueue serve`` on a free loopback port, as jobqueue_web, with an operator token."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.token = ""
        self.log: Any = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Server:
        from psycopg.conninfo import make_conninfo

        with self.bench.scratch.admin() as admin:
            admin.execute("ALTER ROLE jobqueue_web LOGIN")
        with self.bench.scratch.connect() as conn:
            row = conn.execute("SELECT token FROM jobqueue.create_token('operator', name => 'bench')").fetchone()
            self.token = str(row[0]) if row else ""
        scratch = database_url(self.bench.scratch.admin_url, self.bench.scratch.name)
        url = make_conninfo(scratch, user="jobqueue_web", password=None)
        self.log = tempfile.TemporaryFile()
        command = [sys.executable, "-m", "jobqueue", "--database-url", url, "serve", "--host", self.host,
                   "--port", str(self.port)]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jobqueue serve exited: {self._log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobqueue serve did not answer: {self._log()}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        if self.log is not None:
            self.log.close()

    def _log(self) -> str:
        self.log.seek(0)
        return str(self.log.read()[-2000:].decode(errors="replace"))

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, float | None]:
        """(status, the server's own time in ms)."""
        own = conn or http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            own.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            resp = own.getresponse()
            resp.read()
            timing = resp.getheader("server-timing") or ""
            took = float(timing.split("dur=", 1)[1]) if "dur=" in timing else None
            return resp.status, took
        finally:
            if conn is None:
                own.close()


def list_latency(bench: Bench, server: _Server, rows: int, requests: int) -> None:
    for with_total in (False, True):
        label = "with the capped total" if with_total else "no total"
        bench.begin(f"web: GET /jobs 50 by state and queue ({label}) x{requests}", requests)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        times: list[float] = []
        started = time.monotonic()
        try:
            for i in range(requests + 20):  # the first 20 warm the pool and the caches
                state = "pending" if i % 2 else "completed"
                path = f"/api/v1/jobs?state={state}&queue=q{i % QUEUES}&limit=50&total={str(with_total).lower()}"
                status, took = server.get(path, conn)
                if status != 200:
                    raise RuntimeError(f"GET {path} answered {status}")
                if i >= 20 and took is not None:
                    times.append(took)
                    bench.advance(i - 19)
        finally:
            conn.close()
        seconds = time.monotonic() - started
        extra = percentiles(sorted(times))
        extra.update(rows=rows, queues=QUEUES, total=with_total, clock="Server-Timing (app, database included)")
        key = "web.list_total" if with_total else "web.list"
        row = bench.record(SCENARIO, key, f"GET /jobs 50 by state+queue, {label}", "jobqueue", 1, requests,
                           Measured(len(times), seconds, False, extra=extra))  # fmt: skip
        if not with_total:
            row.target = f"p99 < {LIST_P99_TARGET_MS:g} ms"
            row.met = extra["p99_ms"] is not None and extra["p99_ms"] < LIST_P99_TARGET_MS


def post_throughput(bench: Bench, server: _Server, n: int, budget_s: float) -> None:
    """POST /jobs against enqueue() in ROUNDS rounds, each running both (the order swapped
    every other round): a machine whose speed drifts during the run (a shared or virtual
    one; the reference alone swung 2,200-3,400 jobs/s from run to run here) then weighs on
    both figures alike. The ratio is of the totals; each round's is in the detail."""
    deadline = time.monotonic() + max(budget_s, 60.0)
    per_round = max(CLIENTS, n // ROUNDS)
    totals = {"enqueue": Measured(0, 0.0, False), "http_post": Measured(0, 0.0, False)}
    ratios: list[float] = []
    server_cpu_s = 0.0  # the serve process's CPU during the POST runs (Linux: /proc)
    for r in range(ROUNDS):
        shares = [{"start": r * per_round + s, "count": c} for s, c in split(per_round, CLIENTS)]
        rates: dict[str, float] = {}
        for kind in ("enqueue", "http_post") if r % 2 == 0 else ("http_post", "enqueue"):
            what = f"enqueue() per tx x{CLIENTS} (reference)" if kind == "enqueue" else f"POST /jobs x{CLIENTS} clients"
            bench.begin(f"web: round {r + 1}/{ROUNDS}: {what}", per_round)
            params = shares if kind == "enqueue" else [
                {**s, "host": server.host, "port": server.port, "token": server.token} for s in shares
            ]  # fmt: skip
            before = proc_times(server.proc.pid) if kind == "http_post" and server.proc else None
            jobs_before = _jobs_made(bench, kind)
            m = bench.run_processes(kind, CLIENTS, per_round, deadline, params)
            after = proc_times(server.proc.pid) if before is not None and server.proc else None
            made = _jobs_made(bench, kind) - jobs_before
            if made != m.jobs:  # every request counted made exactly one job, and no other did
                raise BenchError(f"web: {kind} counted {m.jobs:,} jobs but {made:,} were made")
            if before is not None and after is not None:
                server_cpu_s += after[0] - before[0]
            total = totals[kind]
            totals[kind] = Measured(total.jobs + m.jobs, total.seconds + m.seconds, total.partial or m.partial)
            rates[kind] = m.rate
        if rates["enqueue"] > 0:
            ratios.append(round(rates["http_post"] / rates["enqueue"], 3))
    planned = per_round * ROUNDS
    bench.record(SCENARIO, "web.enqueue_reference", f"enqueue(), 1 tx/job, {ROUNDS} rounds beside the POSTs",
                 "jobqueue", CLIENTS, planned, totals["enqueue"])  # fmt: skip
    post = totals["http_post"]
    post.extra["round_ratios"] = ratios
    if server_cpu_s and post.jobs:
        post.extra["server_cpu_us_per_post"] = round(server_cpu_s / post.jobs * 1e6)
    row = bench.record(SCENARIO, "web.post", f"POST /api/v1/jobs, {CLIENTS} client processes", "jobqueue", CLIENTS,
                       planned, post)  # fmt: skip
    reference = bench.row("web.enqueue_reference")
    row.baseline = "web.enqueue_reference"
    if reference is not None and reference.rate > 0:
        row.ratio = round(row.rate / reference.rate, 3)
    row.target = f">= {POST_RATIO_TARGET:.0%} of enqueue()"
    row.met = row.ratio is not None and row.ratio >= POST_RATIO_TARGET


def _jobs_made(bench: Bench, kind: str) -> int:
    """Jobs in the bench's queue made by API tokens (POST) or by the bench's own role (enqueue())."""
    with bench.scratch.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobqueue.job WHERE queue = %s AND (created_by LIKE 'token:%%') = %s",
            (QUEUE, kind == "http_post"),
        ).fetchone()
    return int(row[0]) if row else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@table
def print_table(bench: Bench, console: Any) -> None:
    from rich.table import Table

    rows = [r for r in bench.rows if r.scenario == SCENARIO]
    if not rows:
        return
    out = Table(title="HTTP API (jobqueue serve)", title_justify="left")
    for heading in ("figure", "result", "detail", "target"):
        out.add_column(heading)
    for r in rows:
        e = r.extra
        if r.key.startswith("web.list"):
            result = f"p50 {e.get('p50_ms')} ms, p99 {e.get('p99_ms')} ms"
            detail = f"{e.get('samples')} requests on {e.get('rows'):,} jobs, server time"
        else:
            result = f"{r.rate:,.0f} jobs/s"
            detail = f"{r.jobs:,} jobs, {r.processes} processes" + (f", ratio {r.ratio:.0%}" if r.ratio else "")
            if e.get("server_cpu_us_per_post"):
                detail += f", server CPU {e['server_cpu_us_per_post']} µs/POST"
            if e.get("round_ratios"):
                detail += f" (rounds: {', '.join(f'{x:.0%}' for x in e['round_ratios'])})"
        mark = "" if r.target is None else f"{r.target} {'[green]met[/]' if r.met else '[red]missed[/]'}"
        out.add_row(r.label, result, detail, mark)
    console.print(out)
