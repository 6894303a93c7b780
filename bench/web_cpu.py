"""CPU per job of POST /api/v1/jobs vs enqueue(), by component (docs/performance.md).

Runs ``enqueue()`` in 4 processes and then ``POST /api/v1/jobs`` from 4 processes against a
real ``jobqueue serve`` (one uvicorn process), N jobs each, and reads the CPU time
(/proc/<pid>/stat, user + system) of the client processes, of the server process and of the
PostgreSQL backends serving each (found by application_name in pg_stat_activity, so the
database must be on this machine). Prints ms of CPU per job per component, and the rate.

    .venv/bin/python bench/web_cpu.py --database-url URL [--jobs 4000] [--rounds 2]

URL: a superuser of a local PostgreSQL; a database ``jobqueue_webcpu`` is dropped and
recreated in it. The server runs the ``jobqueue`` that ``python -m jobqueue`` imports, i.e.
the one in the current directory first (it comes before PYTHONPATH): to compare two
versions in one sitting, run this from a checkout of each, in turn.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

CLIENTS = 4
DB = "jobqueue_webcpu"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def backends(admin: psycopg.Connection[Any], app: str) -> dict[int, float]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s", (DB, app)
    ).fetchall()
    return {int(r[0]): cpu_s(int(r[0])) for r in rows}


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[p] - before.get(p, 0.0) for p in after)


def enqueue_child(url: str, start: int, count: int, ready: Any, go: Any, done: Any, out: Any) -> None:
    from jobqueue.client import JobQueue

    with JobQueue(url, pool_size=1, application_name="webcpu-enqueue") as jq:
        jq.check_schema()
        ready.release()
        go.wait()
        t0 = time.process_time()
        for i in range(start, start + count):
            jq.enqueue("bench.noop", {"i": i}, queue="default")
        out.put(time.process_time() - t0)
        done.wait()


def post_child(port: int, token: str, start: int, count: int, ready: Any, go: Any, done: Any, out: Any) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/v1/whoami", headers=headers)
    conn.getresponse().read()
    ready.release()
    go.wait()
    t0 = time.process_time()
    for i in range(start, start + count):
        body = json.dumps({"type": "bench.noop", "payload": {"i": i}, "queue": "default"})
        conn.request("POST", "/api/v1/jobs", body, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise SystemExit(f"POST answered {resp.status}")
    out.put(time.process_time() - t0)
    done.wait()


def run(target: Any, args_of: Any, n: int) -> tuple[list[Any], Any, Any, Any]:
    """CLIENTS processes, connected and waiting: (processes, go, done, results queue)."""
    ctx = mp.get_context("fork")
    ready, go, done, out = ctx.Semaphore(0), ctx.Event(), ctx.Event(), ctx.Queue()
    share = n // CLIENTS
    procs = [
        ctx.Process(target=target, args=(*args_of(k * share, share), ready, go, done, out)) for k in range(CLIENTS)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    return procs, go, done, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    a = parser.parse_args()
    admin_url = a.database_url
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    url = make_conninfo(admin_url, dbname=DB)
    subprocess.run([sys.executable, "-m", "jobqueue", "--database-url", url, "migrate"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("ALTER ROLE jobqueue_web LOGIN")
        token = str(c.execute("SELECT token FROM jobqueue.create_token('operator', name => 'cpu')").fetchone()[0])
    web_url = make_conninfo(url, user="jobqueue_web", password=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "JOBQUEUE_SERVE_WORKERS": str(a.workers)}
    command = [sys.executable, "-m", "jobqueue", "--database-url", web_url, "serve", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(200):
            try:
                c2 = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c2.request("GET", "/readyz")
                if c2.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        server_pids = [server.pid] + [int(p) for p in os.popen(f"pgrep -P {server.pid}").read().split()]
        host = conninfo_to_dict(admin_url)
        with psycopg.connect(make_conninfo(admin_url, dbname=host.get("dbname", "postgres")), autocommit=True) as adm:
            # warm up: the pool grows to the clients' concurrency, plans get prepared
            procs, go, done, out = run(post_child, lambda s, c: (port, token, s, c), 800)
            go.set()
            [out.get() for _ in procs]
            done.set()
            [p.join() for p in procs]
            for r in range(a.rounds):
                for name, target, args_of, app in (
                    ("enqueue() x4", enqueue_child, lambda s, c: (url, s, c), "webcpu-enqueue"),
                    ("POST /jobs x4", post_child, lambda s, c: (port, token, s, c), "jobqueue-web"),
                ):
                    procs, go, done, out = run(target, args_of, a.jobs)
                    b0 = backends(adm, app)
                    s0 = sum(cpu_s(p) for p in server_pids)
                    t0 = time.monotonic()
                    go.set()
                    client = sum(out.get() for _ in procs)
                    wall = time.monotonic() - t0
                    pg = spent(b0, backends(adm, app))
                    srv = sum(cpu_s(p) for p in server_pids) - s0 if app == "jobqueue-web" else 0.0
                    done.set()
                    [p.join() for p in procs]
                    n = a.jobs
                    load = os.getloadavg()[0]
                    print(f"round {r + 1} {time.strftime('%H:%M:%S', time.gmtime())} load {load:.1f} {name:14s} "
                          f"{n / wall:7.0f} jobs/s  ms CPU/job: clients {client / n * 1000:.3f} server "
                          f"{srv / n * 1000:.3f} postgres {pg / n * 1000:.3f} total "
                          f"{(client + srv + pg) / n * 1000:.3f}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
