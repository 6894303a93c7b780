"""SSE delivery lag: from a transition's commit to its event arriving on /live/events.

Starts ``jobqueue serve`` (as jobqueue_web) on a free loopback port against the database of
``--database-url`` (a superuser or the schema owner: it lets jobqueue_web log in and makes an
admin token), opens one SSE stream, then enqueues ``--jobs`` jobs one at a time (each its own
commit; enqueue sends NOTIFY, so the stream wakes at once) and completes them one at a time
(complete sends no NOTIFY: the stream's 1 s poll picks it up). Prints p50/p99/max lag per
kind. Measurement only: nothing here decides a test.

    .venv/bin/python bench/sse_lag.py --database-url postgresql://postgres@127.0.0.1:5432/test --jobs 200
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause between two commits")
    args = parser.parse_args()

    admin = psycopg.connect(args.database_url, autocommit=True, row_factory=dict_row)
    admin.execute("ALTER ROLE jobqueue_web LOGIN")
    token = admin.execute("SELECT token FROM jobqueue.create_token('admin', NULL, '1 hour', 'sse-lag bench')")
    token = token.fetchone()["token"]  # type: ignore[index]
    parts = urlsplit(args.database_url)
    web_url = urlunsplit(parts._replace(netloc="jobqueue_web@" + parts.netloc.rpartition("@")[2]))
    port = free_port()
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "--database-url", web_url, *serve],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    arrived: dict[tuple[int, str], float] = {}
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/live/events", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()

        def collect() -> None:
            try:
                for line in resp.fp:
                    if line.startswith(b"data: "):
                        now = time.time()
                        for e in json.loads(line[6:]):
                            arrived.setdefault((e["job_id"], e["to"] or "deleted"), now)
            except (OSError, ValueError):
                pass

        threading.Thread(target=collect, daemon=True).start()
        time.sleep(1.5)  # the stream's first read
        committed: dict[tuple[int, str], float] = {}
        queue = f"sse-lag-{port}"
        ids: list[int] = []
        for _ in range(args.jobs):
            row = admin.execute("SELECT jobqueue.enqueue('bench.noop', '{}', %s) AS id", (queue,)).fetchone()
            committed[(row["id"], "pending")] = time.time()  # type: ignore[index]
            ids.append(row["id"])  # type: ignore[index]
            time.sleep(args.gap_ms / 1000)
        for _ in range(args.jobs):
            c = admin.execute("SELECT id, token FROM jobqueue.claim(ARRAY[%s], 'sse-lag', 1)", (queue,)).fetchone()
            assert c is not None
            admin.execute("SELECT jobqueue.complete(%s, %s)", (c["id"], c["token"]))
            committed[(c["id"], "completed")] = time.time()
            time.sleep(args.gap_ms / 1000)
        time.sleep(3)
        conn.close()
    finally:
        server.terminate()
        server.wait(20)
    for kind, label in (("pending", "enqueue (NOTIFY wakes the stream)"), ("completed", "complete (1 s poll)")):
        lags = [1000 * (arrived[k] - t) for k, t in committed.items() if k[1] == kind and k in arrived]
        missing = sum(1 for k in committed if k[1] == kind and k not in arrived)
        if not lags:
            print(f"{label}: no events arrived ({missing} missing)")
            continue
        print(
            f"{label}: n={len(lags)} missing={missing} p50={statistics.median(lags):.1f} ms "
            f"p99={pct(lags, 99):.1f} ms max={max(lags):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
