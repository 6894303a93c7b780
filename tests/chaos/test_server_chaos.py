"""Server chaos: PostgreSQL crash-restarts, backend-kill storms, a full server (CHAOS-03, 04, 09).

CHAOS-03 and CHAOS-09 run on the suite's private embedded PostgreSQL (it is stopped and
filled up); CHAOS-04 kills only its own workers' backends, on the test server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import DatabaseUnavailable, JobQueue
from jobqueue.embedded import EmbeddedServer
from tests.chaos.conftest import Figures
from tests.chaos.harness import (
    Feeder,
    Workers,
    check_invariants,
    completed_count,
    connect,
    db_now,
    enqueue,
    log_of,
    log_records,
    measure,
    pct,
    rate,
    scalar,
    scaled,
    tier_targets,
    wait_drained,
    wait_for,
    warm_up,
    work_jobs,
)

pytestmark = pytest.mark.timeout(scaled(300, 1800))

VT, R = 3, 1
FLEET = ("-c", "4", "--visibility-timeout", str(VT), "--reconcile-interval", str(R), "--poll-interval", "0.5")
WORKER_BACKENDS = "(application_name LIKE 'jq-worker-%%' OR application_name LIKE 'jobqueue-listen:%%')"


# -- CHAOS-03 --------------------------------------------------------------------------------


def test_postgres_immediate_restart(
    private_server: EmbeddedServer, private_db: str, tmp_path: Path, figures: Figures
) -> None:
    """Crash-restarts of PostgreSQL (pg_ctl -m immediate) under steady load."""
    # "after" is measured from vt + R + 1 s after the fault in both tiers: the orphaned leases are back by then.
    grace = VT + R + 1
    restarts, down_s, base_s, grace_s, after_s = scaled((3, 1.0, 3.0, grace, 3.0), (10, 5.0, 20.0, grace, 30.0))
    url = private_db
    pool = Workers(url, tmp_path)
    feeder = Feeder(url, low=200, batch=300)
    try:
        feeder.start()
        live = [pool.start(*FLEET) for _ in range(2)]
        warm_up(url)
        baseline, _, _ = measure(url, base_s)
        chaos_start = db_now(url)
        recoveries = []
        for i in range(restarts):
            private_server.stop("immediate")
            # While the server is down, producers get an error, never a silent drop.
            with pytest.raises(DatabaseUnavailable), JobQueue(url, pool_timeout=2) as jq:
                jq.enqueue("chaos.work", {"n": -1})
            time.sleep(down_s)
            private_server.ensure_running()  # returns once the server accepts connections
            back = time.monotonic()
            before = completed_count(url)
            wait_for(lambda n=before: completed_count(url) > n, 60, "the first completion after the restart")
            recoveries.append(time.monotonic() - back)
            if i + 1 < restarts:
                time.sleep(scaled(0.5, 3.0))
        chaos_end = db_now(url)
        during = rate(url, chaos_start, chaos_end)
        time.sleep(grace_s)
        after, _, _ = measure(url, after_s)
        feeder.stop()
        wait_drained(url, scaled(180, 600))
        for proc in live:
            assert proc.poll() is None, log_of(proc)  # no worker process exits
        f = check_invariants(url, pool.log_paths())
    finally:
        feeder.stop()
        pool.kill_all()
    assert feeder.errors > 0, "the producer saw no error while the server was down"
    during_pct, after_pct = pct(during, baseline), pct(after, baseline)
    figures.record(
        "CHAOS-03",
        jobs=f["jobs"],
        faults=f"PG restarts {restarts}",
        lost=f["lost"],
        duplicates=f["duplicates"],
        accepted=f["accepted"],
        recovery_s=round(max(recoveries), 2),
        during_pct=during_pct,
        after_pct=after_pct,
        baseline=round(baseline, 1),
        recoveries=[round(r, 2) for r in recoveries],
        # RELIABILITY CHAOS-03: first claim within 10 s of the server being back, in both tiers.
        targets=tier_targets({"first claim <= 10s": max(recoveries) <= 10}, {"after >= 95%": (after_pct or 0) >= 95}),
        note=f"recovery = slowest of {restarts} restarts, server accepting connections -> first completion; "
        f"down {down_s:g} s each; the producer got {feeder.errors} errors while down, none silent",
    )


# -- CHAOS-04 --------------------------------------------------------------------------------


def test_backend_terminate_storm(workers: Workers, ledger_db: str, figures: Figures) -> None:
    """pg_terminate_backend on the workers' backends 5/s under steady load: no loss, no double, no exit."""
    storm_s, base_s, grace_s, after_s = scaled((5.0, 3.0, VT + R + 1, 3.0), (60.0, 20.0, VT + R + 1, 20.0))
    feeder = Feeder(ledger_db, low=200, batch=300)
    feeder.start()
    live = [workers.start(*FLEET) for _ in range(2)]
    warm_up(ledger_db)
    baseline, _, _ = measure(ledger_db, base_s)
    chaos_start = db_now(ledger_db)
    victims = 0
    with connect(ledger_db) as db:
        end = time.monotonic() + storm_s
        while time.monotonic() < end:
            victims += scalar(
                db,
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND {WORKER_BACKENDS} ORDER BY random() LIMIT 1) t",
            )
            time.sleep(0.2)
    chaos_end = db_now(ledger_db)
    during = rate(ledger_db, chaos_start, chaos_end)
    time.sleep(grace_s)
    after, _, _ = measure(ledger_db, after_s)
    feeder.stop()
    assert victims > storm_s * 3, victims
    wait_drained(ledger_db, scaled(180, 600))
    for proc in live:
        assert proc.poll() is None, log_of(proc)
    f = check_invariants(ledger_db, workers.log_paths())
    during_pct, after_pct = pct(during, baseline), pct(after, baseline)
    figures.record(
        "CHAOS-04",
        jobs=f["jobs"],
        faults=f"backends killed {victims}",
        lost=f["lost"],
        duplicates=f["duplicates"],
        accepted=f["accepted"],
        during_pct=during_pct,
        after_pct=after_pct,
        baseline=round(baseline, 1),
        targets=tier_targets({}, {"during >= 50%": (during_pct or 0) >= 50, "after >= 95%": (after_pct or 0) >= 95}),
        note=f"5 terminations/s for {storm_s:g} s; after = {after_s:g} s window from {grace_s:g} s after the storm",
    )


# -- CHAOS-09 --------------------------------------------------------------------------------


def fill_server(url: str, admin: psycopg.Connection[Any]) -> list[psycopg.Connection[Any]]:
    """Take every connection slot the server has left, and keep the workers out of it."""
    held: list[psycopg.Connection[Any]] = []
    for _ in range(10):
        admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {WORKER_BACKENDS}")
        while True:
            try:
                held.append(psycopg.connect(url, autocommit=True, connect_timeout=5, application_name="chaos-hog"))
            except psycopg.OperationalError as exc:
                assert "too many" in str(exc) or "reserved" in str(exc), exc
                break
        if not scalar(admin, f"SELECT count(*) FROM pg_stat_activity WHERE {WORKER_BACKENDS}"):
            return held
        time.sleep(0.05)
    raise AssertionError("the workers kept getting connection slots")


def line_count(path: Path) -> int:
    """Log lines that are not about one job (those are bounded by the job count, not by time)."""
    with open(path, "rb") as handle:
        return sum(1 for line in handle if b'"job_id"' not in line)


#: The first seconds of the outage are not a loop: each part of the worker (claim loop,
#: heartbeats, listener, reconcile, worker row, each pooled connection) logs its first
#: failures as its back-off starts (0.1, 0.2, 0.4 ... s), a burst bounded by the number of
#: parts, not by time. CHAOS-09 is about a tight error loop: the sustained rate after it.
ONSET_S = 2.0


def busiest_second(paths: Sequence[Path], start: float, end: float) -> int:
    """The most lines one worker logged within any 1-second window of [start, end), by the
    records' own timestamps (not by when a sampler happened to look), lines about one job
    not counted."""
    worst = 0
    for path in paths:
        stamps = sorted(
            float(r["ts"]) for r in log_records(path) if "job_id" not in r and start <= float(r.get("ts", 0)) < end
        )
        first = 0
        for last, stamp in enumerate(stamps):
            while stamp - stamps[first] >= 1.0:
                first += 1
            worst = max(worst, last - first + 1)
    return worst


def test_pool_exhaustion(private_db: str, tmp_path: Path, figures: Figures) -> None:
    """CHAOS-09: every connection slot taken for a while: workers back off quietly, resume after."""
    hold_s = scaled(5.0, 60.0)
    url = private_db
    pool = Workers(url, tmp_path)
    held: list[psycopg.Connection[Any]] = []
    try:
        enqueue(url, work_jobs(scaled(1000, 4000)))
        live = [pool.start(*FLEET) for _ in range(2)]
        warm_up(url)
        admin = connect(url)
        max_connections = int(scalar(admin, "SHOW max_connections"))
        held = fill_server(url, admin)
        full_at, full_wall = time.monotonic(), time.time()
        paths = pool.log_paths()
        counts = [line_count(p) for p in paths]
        while time.monotonic() - full_at < hold_s:
            time.sleep(0.5)
            for proc in live:
                assert proc.poll() is None, log_of(proc)  # backing off, not crashing
        held_s = time.monotonic() - full_at
        release_wall = time.time()
        average = max((line_count(p) - n) / held_s for p, n in zip(paths, counts, strict=True))
        worst = busiest_second(paths, full_wall + ONSET_S, release_wall)
        # Work waiting at the release, whatever the fleet finished before the server was
        # full (filling it can take seconds on a loaded machine, and 1,000 jobs drain in a
        # few): enqueued on a held slot, acknowledged, so "resume" always has something to show.
        waiting = [
            row[0]
            for row in held[0].execute(
                "SELECT id FROM jobqueue.enqueue_many(%s::jsonb) AS id", (json.dumps(work_jobs(50, seed=9)),)
            ).fetchall()
        ]
        held[0].execute("INSERT INTO enqueue_ledger (job_id) SELECT unnest(%s::bigint[])", (waiting,))
        stalled = scalar(admin, "SELECT count(*) FROM jobqueue.job_history WHERE state = 'completed'")
        admin.close()
        for conn in held:
            conn.close()
        held = []
        released = time.monotonic()
        wait_for(lambda: completed_count(url) > stalled, 120, "work to resume after the release", interval=0.1)
        resume_s = time.monotonic() - released
        wait_drained(url, scaled(180, 600))
        for proc in live:
            assert proc.poll() is None, log_of(proc)
        f = check_invariants(url, pool.log_paths())
    finally:
        for conn in held:
            conn.close()
        pool.kill_all()
    figures.record(
        "CHAOS-09",
        jobs=f["jobs"],
        faults=f"server full {hold_s:g} s",
        lost=f["lost"],
        duplicates=f["duplicates"],
        accepted=f["accepted"],
        recovery_s=round(resume_s, 2),
        max_log_lines_per_s=worst,
        avg_log_lines_per_s=round(average, 1),
        targets={"<= 10 log lines/s": worst <= 10 and average <= 10, "resume <= 10s": resume_s <= 10},
        note=f"every slot of max_connections={max_connections} taken (workers' backends terminated first); "
        f"busiest worker: {worst} lines in any 1 s from {ONSET_S:g} s after the fill to the release (record "
        f"timestamps), {average:.1f} lines/s on average over the whole {held_s:.0f} s (lines about one job not "
        "counted); recovery = release -> first completion",
    )
