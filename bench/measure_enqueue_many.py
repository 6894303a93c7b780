"""Time jobqueue.enqueue_many of 100,000 simple jobs in one SQL call (no Python per job), 3 runs.

Runs on the resolved database (embedded by default), in a scratch database ``jq_em`` that it
creates, migrates and drops. Usage: ``.venv/bin/python bench/measure_enqueue_many.py``.
"""

from __future__ import annotations

import json
import time

import psycopg
from psycopg.conninfo import make_conninfo

from jobqueue import migrations
from jobqueue.config import DatabaseTarget, resolve_database

JOBS = 100_000
SCRATCH = "jq_em"


def main() -> None:
    url = resolve_database().url
    scratch = make_conninfo(url, dbname=SCRATCH)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        conn.execute(f"CREATE DATABASE {SCRATCH}")
    try:
        migrations.upgrade(DatabaseTarget(scratch, "scratch"))
        doc = json.dumps([{"type": "t", "payload": {"i": i}} for i in range(JOBS)])
        with psycopg.connect(scratch, autocommit=True) as conn:
            for run in range(3):
                start = time.perf_counter()
                conn.execute("SELECT count(*) FROM jobqueue.enqueue_many(%s::jsonb)", (doc,))
                took = time.perf_counter() - start
                print(f"run {run}: {JOBS:,} jobs in {took:.2f} s = {JOBS / took:,.0f} jobs/s")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")


if __name__ == "__main__":
    main()
