"""Single-tenant cost of revision 0002 (RLS, admission): 0001 vs head, same server, same run.

Two databases whose schema a plain (non-superuser) role owns, so row-level security is in
force: one at revision 0001, one at head. Both are driven by the same unmapped producer and
worker login roles, in alternating rounds, so drift on a shared machine hits both alike.
Prints median microseconds per call (lower is better) and the ratio head/0001.

    .venv/bin/python bench/measure_tenancy.py [--rounds 5] [--n 2000]   # DATABASE_URL or embedded
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg import sql

from jobqueue import migrations
from jobqueue.config import DatabaseTarget


def url_for(base: str, dbname: str, user: str | None = None) -> str:
    info = psycopg.conninfo.conninfo_to_dict(base)
    info["dbname"] = dbname
    if user:
        info["user"] = user
        info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000, help="calls per operation per round")
    args = parser.parse_args()
    base = os.environ.get("DATABASE_URL")
    if not base:
        from jobqueue.embedded import EmbeddedServer

        base = EmbeddedServer().ensure_running()
    tag = uuid.uuid4().hex[:8]
    owner, producer, worker = f"jqb_owner_{tag}", f"jqb_prod_{tag}", f"jqb_work_{tag}"
    dbs = {"0001": f"jqb_0001_{tag}", "head": f"jqb_head_{tag}"}
    with psycopg.connect(base, autocommit=True) as su:
        su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        for name in dbs.values():
            su.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
    try:
        from alembic import command

        for rev, name in dbs.items():
            target = DatabaseTarget(url_for(base, name, owner), rev)
            if rev == "head":
                migrations.upgrade(target)
            else:
                command.upgrade(migrations.alembic_config(target), rev)
        with psycopg.connect(base, autocommit=True) as su:
            su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE jobqueue_producer").format(sql.Identifier(producer)))
            su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE jobqueue_worker").format(sql.Identifier(worker)))
        results: dict[str, dict[str, list[float]]] = {rev: {} for rev in dbs}
        for _ in range(args.rounds):
            for rev, name in dbs.items():
                with (
                    psycopg.connect(url_for(base, name, producer), autocommit=True) as p,
                    psycopg.connect(url_for(base, name, worker), autocommit=True) as w,
                ):
                    for conn in (p, w):  # measure the statements, not the disk's fsync
                        conn.execute("SET synchronous_commit = off")
                    for op, fn in ops(p, w, args.n).items():
                        results[rev].setdefault(op, []).append(fn())
        report = {}
        for op in results["head"]:
            before, after = statistics.median(results["0001"][op]), statistics.median(results["head"][op])
            report[op] = {"0001_us": round(before, 1), "head_us": round(after, 1), "ratio": round(after / before, 3)}
            print(f"{op:28s} 0001 {before:8.1f} us   head {after:8.1f} us   head/0001 {after / before:6.3f}")
        print(json.dumps(report))
    finally:
        with psycopg.connect(base, autocommit=True) as su:
            for name in dbs.values():
                su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            for role in (producer, worker, owner):
                su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def ops(p: psycopg.Connection, w: psycopg.Connection, n: int) -> dict[str, Callable[[], float]]:
    """Each returns the mean microseconds per job over n jobs. The loops run server-side (one
    DO block each, as the producer or worker login role), so client round trips and the
    machine's scheduling noise between them do not drown the per-call cost."""

    def timed(conn: psycopg.Connection, body: str, jobs: int) -> float:
        start = time.perf_counter()
        conn.execute(
            sql.SQL("DO $b$ DECLARE r record; ids bigint[]; toks bigint[]; BEGIN {} END $b$").format(
                sql.SQL(body.replace("{n}", str(n)))
            )
        )
        return (time.perf_counter() - start) / jobs * 1e6

    return {
        "enqueue (1 job)": lambda: timed(
            p, "FOR i IN 1..{n} LOOP PERFORM jobqueue.enqueue('bench', jsonb_build_object('i', i)); END LOOP;", n
        ),
        "enqueue_many (per job)": lambda: timed(
            p,
            "FOR i IN 1..{n} / 100 LOOP PERFORM count(*) FROM jobqueue.enqueue_many("
            "(SELECT jsonb_agg(jsonb_build_object('type', 'bench', 'payload', jsonb_build_object('i', g))) "
            "FROM generate_series(1, 100) g)); END LOOP;",
            n // 100 * 100,
        ),
        "claim(1)+complete": lambda: timed(
            w,
            "FOR i IN 1..{n} LOOP SELECT c.id, c.token INTO r FROM jobqueue.claim(ARRAY['default'], 'w', 1) c; "
            "PERFORM jobqueue.complete(r.id, r.token); END LOOP;",
            n,
        ),
        "claim(10)+complete_many": lambda: timed(
            w,
            "FOR i IN 1..{n} / 10 LOOP SELECT array_agg(c.id), array_agg(c.token) INTO ids, toks "
            "FROM jobqueue.claim(ARRAY['default'], 'w', 10) c; "
            "PERFORM count(*) FROM jobqueue.complete_many(ids, toks); END LOOP;",
            n // 10 * 10,
        ),
    }


if __name__ == "__main__":
    main()
