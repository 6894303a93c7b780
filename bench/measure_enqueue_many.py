# Times jobqueue.enqueue_many of 100,000 simple jobs in one SQL call (no Python per job), 3 runs, on the
# resolved database (embedded by default), in a scratch database jq_em it drops afterwards.
import json, time, psycopg, sys
from jobqueue.config import resolve_database
url = resolve_database().url
with psycopg.connect(url, autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS jq_em"); c.execute("CREATE DATABASE jq_em")
from jobqueue import migrations
from jobqueue.config import DatabaseTarget
u = url.replace("/jobqueue?", "/jq_em?")
migrations.upgrade(DatabaseTarget(u, "x"))
doc = json.dumps([{"type": "t", "payload": {"i": i}} for i in range(100_000)])
with psycopg.connect(u, autocommit=True) as c:
    for run in range(3):
        t = time.perf_counter(); c.execute("SELECT count(*) FROM jobqueue.enqueue_many(%s::jsonb)", (doc,)); d = time.perf_counter() - t
        print(f"run {run}: 100,000 jobs in {d:.2f} s = {100_000/d:,.0f} jobs/s")
with psycopg.connect(url, autocommit=True) as c:
    c.execute("DROP DATABASE jq_em WITH (FORCE)")
