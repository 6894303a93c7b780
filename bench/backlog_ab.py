"""What a large, growing backlog costs a claim, with the machine's drift cancelled (issue 13).

`jobqueue bench --only overload` measures throughput over minutes while the backlog grows,
and on a machine whose own speed swings by 10-40 % between 30 s spans (docs/performance.md,
"the machine check") a few percent per million waiting jobs is lost in that swing. This
script compares two *lanes* in alternating slots instead, so that whatever the machine does
hits both alike: each lane is its own database on the same server with the same schema, and
each slot runs one lane's loop for ``--slot-s`` seconds: the worker's round (complete_many of
the last batch and claim of 32 in one pipeline, as jobqueue/worker.py sends them) and
enqueue_many calls of 128 jobs, ``--grow`` times as many jobs as the lane completed. Lanes
run A B B A A B ...

``--compare backlog``: lane A holds ``--small`` waiting jobs and enqueues what it completes;
lane B holds ``--large`` and grows by ``--grow``.
``--compare vacuum``: both lanes start from one copy of ``--large`` waiting jobs and grow;
lane A's jobqueue.job has the vacuum settings of revision 0019 (autovacuum after 500 + 2 % of
its rows are dead; ``vacuum_index_cleanup = auto``, PostgreSQL's default, which skips the
index pass while the dead rows are on under 2 % of the pages), lane B the schema's own
(revision 0020: after 20,000 dead rows, whatever the size; the index pass always).

Per slot it records jobs completed per second, the job_claim_idx blocks read per claimed job
(pg_statio_user_indexes, counted by the server, not timed) and, where pg_stat_statements is
loaded, the server time per job of claim, complete_many and enqueue_many. It prints each
lane's medians and the medians of B/A over adjacent slots. Autovacuum runs as configured:
its visits are part of what is compared.

Usage: ``.venv/bin/python bench/backlog_ab.py [--compare backlog|vacuum] [--json F]``
on the resolved database ($DATABASE_URL, else the embedded server); it creates its two
databases and drops them at the end (needs a superuser: CREATE DATABASE, ALTER TABLE).
The embedded server does not preload pg_stat_statements; for the per-statement times, a
private server from the same binaries that does (docs/performance.md, "The vacuum that
skipped the claim index")::

    export JOBQUEUE_HOME=/tmp/pgss
    .venv/bin/jobqueue db url && .venv/bin/jobqueue db stop
    printf "shared_preload_libraries='pg_stat_statements'\\nlog_autovacuum_min_duration=0\\n" \\
        >> /tmp/pgss/pgdata/postgresql.conf
    DATABASE_URL=$(.venv/bin/jobqueue db url) .venv/bin/python bench/backlog_ab.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from jobqueue import migrations
from jobqueue.bench.core import chunks, noop_jobs
from jobqueue.bench.scratch import database_url
from jobqueue.client import JobQueue
from jobqueue.config import DatabaseTarget
from jobqueue.round import run_round
from jobqueue.sql import query

BATCH = 32
ENQUEUE_CALL = 128
ACK, CLAIM = query("worker_round_ack").encode(), query("worker_round_claim").encode()
CLAIM_INDEX_BLOCKS = (
    "SELECT coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0) FROM pg_statio_user_indexes "
    "WHERE indexrelid = 'jobqueue.job_claim_idx'::regclass"
)
#: Top-level statements whose server time is reported (per completed job; enqueue per enqueued).
STATEMENTS = {
    "claim": "jobqueue.claim(",
    "complete_many": "jobqueue.complete_many(",
    "enqueue_many": "jobqueue.enqueue_many(",
}
#: Lane A of --compare vacuum: jobqueue.job's vacuum settings before revision 0020.
REVISION_0019_VACUUM = (
    "ALTER TABLE jobqueue.job SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 500, "
    "vacuum_index_cleanup = auto)"
)
STATEMENT_TIMES = "SELECT query, total_exec_time FROM pg_stat_statements WHERE dbid = %s AND toplevel AND query LIKE %s"


class Lane:
    def __init__(self, name: str, url: str, grow: float, statements: bool) -> None:
        self.name, self.grow, self.statements = name, grow, statements
        self.jq = JobQueue(url, pool_size=1, application_name=f"backlog-ab-{name}")
        self.worker = psycopg.connect(url, autocommit=True, application_name=f"backlog-ab-{name}")
        self.stats = psycopg.connect(url, autocommit=True)
        self.stats.execute("SET stats_fetch_consistency = none")
        row = self.stats.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
        assert row is not None
        self.dbid = int(row[0])
        self.batch: list[tuple[Any, ...]] = []
        self.sent = 10_000_000

    def _round(self) -> int:
        statements: list[tuple[bytes, tuple[str, ...], dict[str, Any]]] = []
        if self.batch:
            ack = {
                "ids": [r[0] for r in self.batch],
                "tokens": [r[1] for r in self.batch],
                "outputs": [None] * len(self.batch),
            }
            statements.append((ACK, ("ids", "tokens", "outputs"), ack))
        claim = {
            "queues": ["default"],
            "worker_id": "backlog-ab",
            "batch": BATCH,
            "visibility_timeout": None,
            "types": None,
        }
        statements.append((CLAIM, ("queues", "worker_id", "batch", "visibility_timeout", "types"), claim))
        results = run_round(self.worker, statements)
        done, self.batch = len(self.batch), results[-1]
        return done

    def _flush(self) -> None:
        """This lane's backends hand their pending statistics to the server now."""
        self.worker.execute("SELECT pg_stat_force_next_flush()")
        with self.jq.pool.connection() as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")

    def _counters(self) -> dict[str, float]:
        row = self.stats.execute(CLAIM_INDEX_BLOCKS).fetchone()
        out = {"claim_index_blocks": float(row[0]) if row else 0.0}
        if self.statements:
            for key, text in STATEMENTS.items():
                rows = self.stats.execute(STATEMENT_TIMES, (self.dbid, f"%{text}%")).fetchall()
                out[key] = sum(float(r[1]) for r in rows)
        return out

    def slot(self, seconds: float) -> dict[str, Any]:
        self._flush()
        before = self._counters()
        started = time.monotonic()
        done = claimed = enqueued = 0
        owed = 0.0
        while time.monotonic() - started < seconds:
            finished = self._round()
            done += finished
            claimed += len(self.batch)
            owed += finished * self.grow
            while owed >= ENQUEUE_CALL:
                self.jq.enqueue_many(noop_jobs(self.sent, ENQUEUE_CALL))
                self.sent += ENQUEUE_CALL
                enqueued += ENQUEUE_CALL
                owed -= ENQUEUE_CALL
        wall = time.monotonic() - started
        self._flush()
        after = self._counters()
        record: dict[str, Any] = {
            "lane": self.name,
            "completed": done,
            "enqueued": enqueued,
            "rate": round(done / wall, 1),
            "claim_index_blocks_per_job": round(
                (after["claim_index_blocks"] - before["claim_index_blocks"]) / max(claimed, 1), 2
            ),
        }
        for key in STATEMENTS if self.statements else ():
            per = enqueued if key == "enqueue_many" else done
            record[f"{key}_us_per_job"] = round((after[key] - before[key]) * 1000 / max(per, 1), 2)
        return record

    def close(self) -> None:
        self.jq.close()
        self.worker.close()
        self.stats.close()


def fill(url: str, n: int) -> None:
    with JobQueue(url, pool_size=1) as jq:
        for start, size in chunks(n, 10_000):
            jq.enqueue_many(noop_jobs(start, size))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobqueue.job")


def has_statements(url: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT count(*) FROM pg_stat_statements")
        return True
    except psycopg.Error:
        return False


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in records[0] if k not in ("lane", "completed", "enqueued", "slot")]
    out: dict[str, Any] = {}
    for lane in ("A", "B"):
        mine = [r for r in records if r["lane"] == lane]
        out[lane] = {k: round(statistics.median(r[k] for r in mine), 2) for k in keys}
    pairs = [(x, y) if x["lane"] == "A" else (y, x) for x, y in itertools.pairwise(records) if x["lane"] != y["lane"]]
    out["B/A"] = {k: round(statistics.median(b[k] / a[k] for a, b in pairs if a[k]), 3) for k in keys}
    out["pairs"] = len(pairs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", choices=("backlog", "vacuum"), default="backlog")
    parser.add_argument("--large", type=int, default=4_000_000, help="waiting jobs in the large lane(s)")
    parser.add_argument("--small", type=int, default=20_000, help="waiting jobs in lane A of --compare backlog")
    parser.add_argument("--grow", type=float, default=1.3, help="jobs enqueued per job completed in a growing lane")
    parser.add_argument("--slot-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=16, help="rounds of two slots (A B, then B A)")
    parser.add_argument("--skip", type=int, default=2, help="first slots left out of the summary (warm-up)")
    parser.add_argument("--json", help="write every slot and the summary here")
    args = parser.parse_args()
    for field, value, low in (("large", args.large, 1000), ("small", args.small, 0), ("rounds", args.rounds, 2)):
        if value < low:
            parser.error(f"--{field}: at least {low}")
    if not 1.0 <= args.grow <= 3.0:
        parser.error("--grow: between 1.0 and 3.0")
    if args.slot_s < 1:
        parser.error("--slot-s: at least 1")
    base = os.environ.get("DATABASE_URL")
    if not base:
        from jobqueue.embedded import EmbeddedServer

        base = EmbeddedServer().ensure_running()
    tag = uuid.uuid4().hex[:8]
    names = {"A": f"jqab_a_{tag}", "B": f"jqab_b_{tag}"}
    lanes: list[Lane] = []
    with psycopg.connect(base, autocommit=True) as su:
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names["B"])))
    try:
        urls = {lane: database_url(base, name) for lane, name in names.items()}
        migrations.upgrade(DatabaseTarget(urls["B"], "backlog-ab"))
        print(f"filling lane B with {args.large:,} jobs", flush=True)
        fill(urls["B"], args.large)
        with psycopg.connect(base, autocommit=True) as su:
            template = names["B"] if args.compare == "vacuum" else "template0"
            su.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(names["A"]), sql.Identifier(template))
            )
        if args.compare == "backlog":
            migrations.upgrade(DatabaseTarget(urls["A"], "backlog-ab"))
            fill(urls["A"], args.small)
            grow = {"A": 1.0, "B": args.grow}
        else:
            with psycopg.connect(urls["A"], autocommit=True) as conn:
                conn.execute(REVISION_0019_VACUUM)
            grow = {"A": args.grow, "B": args.grow}
        statements = has_statements(urls["A"]) and has_statements(urls["B"])
        lanes = [Lane(lane, urls[lane], grow[lane], statements) for lane in ("A", "B")]
        records: list[dict[str, Any]] = []
        for r in range(args.rounds):
            for lane in lanes if r % 2 == 0 else lanes[::-1]:
                record = lane.slot(args.slot_s) | {"slot": len(records)}
                records.append(record)
                print(json.dumps(record), flush=True)
        summary = summarize(records[args.skip :])
        summary["config"] = vars(args) | {"pg_stat_statements": statements}
        print(json.dumps(summary, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"slots": records, "summary": summary}, f, indent=1)
    finally:
        for lane in lanes:
            lane.close()
        with psycopg.connect(base, autocommit=True) as su:
            for name in names.values():
                su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
