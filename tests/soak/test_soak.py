"""Soak, bloat and operations (RELIABILITY.md 4.3: SOAK-01, SOAK-02, OPS-01, OPS-02).

Real `jobqueue worker` processes (``tests.support.soak_app:jq``) against the test server,
each scenario in a database of its own. ``SOAK_SCALE=quick`` shrinks every size (see
``SIZES``); the figures of a quick run are a smoke test, not the plan's figures.

SOAK-01  steady load; from minute 5 a session holds ``BEGIN; SELECT txid_current()`` for 10
         minutes (vacuum can remove nothing newer). During the hold the alert metric
         ``oldest_xmin_age`` must fire; after release throughput must be back to >= 90 % of
         the baseline within 5 minutes and the hot table's dead tuples back down within 3
         autovacuum runs. The alert is the product's own: ``jobqueue.health()``'s
         ``oldest_xmin_age_s`` check, with the threshold set to ``alert_s``.
OPS-02   sampled every 100 ms during the whole SOAK-01 run (1 % of its jobs run 2 s):
         no worker backend idle in transaction > 1 s, no worker transaction as long as a
         handler.
SOAK-02  a million jobs through with history/event retention of 1 minute and reconcile run
         every second (as a pg_cron job would); heap+index size at the end <= 3x the size
         at the 100k-job steady state; claim p99 at the end <= 2x the start (a probe
         claims 10 jobs every 100 ms from the same queue and times the call).
OPS-01   transactions and xids per job, from `jobqueue bench --only cost` (the single path
         with a -c 1 worker, the batched path with enqueue_many and a -c 50 worker). Runs
         last, once the other scenarios' workers are stopped: xids are counted server-wide,
         so nothing else may write on the server meanwhile. epsilon = 0.02 xid/job
         allows for the worker's own housekeeping (its heartbeat row) and other sessions.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue import JobQueue
from tests.chaos.harness import Workers, wait_for
from tests.soak.conftest import SCALE, Criterion
from tests.support.activity import ActivitySampler

pytestmark = pytest.mark.timeout(3 * 3600)

APP = "tests.support.soak_app:jq"
WORKER_PREFIX = "jq-worker-soak"


@dataclass(frozen=True)
class Soak01Size:
    rate: float  # jobs enqueued per second
    total_s: float
    warmup_s: float  # not part of the baseline
    hold_at_s: float
    hold_s: float
    window_s: float  # throughput is completions per window
    alert_s: float  # oldest_xmin_age alert threshold (seconds)
    recover_within_s: float


@dataclass(frozen=True)
class Soak02Size:
    jobs: int
    steady_at: int  # the "100k-row steady state" mark
    retention_s: int
    rate: float  # jobs enqueued per second (open loop: a slower queue shows as a growing backlog)


SIZES: dict[str, tuple[Soak01Size, Soak02Size, bool]] = {
    "full": (Soak01Size(200, 1200, 60, 300, 600, 10, 60, 300), Soak02Size(1_000_000, 100_000, 60, 1000), False),
    "quick": (Soak01Size(100, 270, 15, 45, 60, 5, 15, 165), Soak02Size(60_000, 20_000, 5, 1000), True),
}
S01, S02, BENCH_QUICK = SIZES[SCALE]
SLOW_HANDLER_MS = 2000
SLOW_SHARE = 0.01


def one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def xmin_alert(conn: psycopg.Connection[Any], alert_s: float) -> dict[str, Any]:
    """The product's oldest-xmin checks (jobqueue.health()) with the alert at `alert_s`."""
    rows = conn.execute(
        "SELECT check_name, value, alert FROM jobqueue.health(max_xmin_age => make_interval(secs => %s))", (alert_s,)
    ).fetchall()
    checks = {r["check_name"]: r for r in rows}
    return {
        "age_s": float(checks["oldest_xmin_age_s"]["value"]),
        "xid_age": int(checks["oldest_xmin_age_xids"]["value"]),
        "alert": bool(checks["oldest_xmin_age_s"]["alert"]),
    }


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("soak-workers")


@pytest.fixture(scope="module")
def workers_for(log_dir: Path) -> Iterator[Callable[[str], Workers]]:
    pools: list[Workers] = []

    def _make(url: str) -> Workers:
        pools.append(Workers(url, log_dir, app=APP))
        return pools[-1]

    yield _make
    for pool in pools:
        pool.kill_all()


class Paced(threading.Thread):
    """Enqueues `rate` soak.work jobs per second (a batch every 50 ms) until stopped or `limit`.

    Handlers sleep 0-`max_ms` ms, and a share `slow_share` of them SLOW_HANDLER_MS."""

    def __init__(
        self, url: str, rate: float, *, limit: int | None = None, max_ms: int = 50, slow_share: float = SLOW_SHARE
    ) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.url, self.rate, self.limit, self.max_ms, self.slow_share = url, rate, limit, max_ms, slow_share
        self.stop = threading.Event()
        self.enqueued = 0
        self.errors: list[str] = []
        self.rng = random.Random(1)

    def payload(self) -> dict[str, Any]:
        if self.slow_share and self.rng.random() < self.slow_share:
            return {"ms": SLOW_HANDLER_MS}
        return {"ms": self.rng.randint(0, self.max_ms)} if self.max_ms else {}

    def run(self) -> None:
        tick = 0.05
        with JobQueue(self.url, pool_size=1, application_name="soak-producer") as jq:
            started = time.monotonic()
            while not self.stop.is_set():
                due = int((time.monotonic() - started) * self.rate) - self.enqueued
                if self.limit is not None:
                    due = min(due, self.limit - self.enqueued)
                    if due <= 0 and self.enqueued >= self.limit:
                        return
                if due > 0:
                    try:
                        jq.enqueue_many([{"type": "soak.work", "payload": self.payload()} for _ in range(due)])
                        self.enqueued += due
                    except Exception as exc:  # recorded: a producer error fails the test
                        self.errors.append(repr(exc))
                self.stop.wait(tick)


# -- SOAK-01 and OPS-02 ----------------------------------------------------------------------

TABLE_STATS = """
SELECT n_live_tup, n_dead_tup, autovacuum_count, vacuum_count
FROM pg_stat_user_tables WHERE schemaname = 'jobqueue' AND relname = 'job'
"""
#: When autovacuum next triggers on jobqueue.job: threshold + scale_factor x reltuples.
AV_TRIGGER = """
SELECT coalesce((SELECT split_part(o, '=', 2)::float8 FROM unnest(c.reloptions) o
                 WHERE o LIKE 'autovacuum_vacuum_threshold=%%'), current_setting('autovacuum_vacuum_threshold')::float8)
     + coalesce((SELECT split_part(o, '=', 2)::float8 FROM unnest(c.reloptions) o
                 WHERE o LIKE 'autovacuum_vacuum_scale_factor=%%'),
                current_setting('autovacuum_vacuum_scale_factor')::float8) * greatest(c.reltuples, 0)
FROM pg_class c WHERE c.oid = 'jobqueue.job'::regclass
"""
PICKUP_P99 = """
SELECT count(*) AS n,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM claimed_at - run_at))::float8 AS p99
FROM jobqueue.job_history WHERE finished_at >= now() - make_interval(secs => %s)
"""


@pytest.fixture(scope="module")
def soak01(soak_db: Callable[[str], str], workers_for: Callable[[str], Workers]) -> dict[str, Any]:
    """Runs SOAK-01 once (with the OPS-02 sampler); both tests read its figures."""
    url = soak_db("s01")
    workers = workers_for(url)
    for i in range(2):
        workers.start("-c", "10", "--log-level", "WARNING", name=f"soak-{i}")
    producer = Paced(url, S01.rate)
    samples: list[dict[str, Any]] = []
    holder: psycopg.Connection[Any] | None = None
    hold_started = released = None
    with (
        psycopg.connect(url, autocommit=True, row_factory=dict_row, application_name="soak-monitor") as mon,
        ActivitySampler(url, WORKER_PREFIX, idle_in_tx_limit_s=1.0, xact_limit_s=1.0) as ops02,
    ):
        wait_for(
            lambda: (
                one(
                    mon,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                    "'jobqueue-listen:%%' AND datname = current_database()",
                )
                >= 2
            ),
            60,
            "workers",
        )
        t0 = time.monotonic()
        producer.start()
        next_window = t0 + S01.window_s
        last_done, last_t = 0, t0
        while (now := time.monotonic()) - t0 < S01.total_s:
            t = now - t0
            if holder is None and hold_started is None and t >= S01.hold_at_s:
                holder = psycopg.connect(url, application_name="soak-idle-in-tx")
                holder.execute("SET idle_in_transaction_session_timeout = 0")
                holder.execute("SELECT txid_current()")  # BEGIN is implicit (not autocommit)
                hold_started = t
            if holder is not None and t >= S01.hold_at_s + S01.hold_s:
                holder.rollback()
                holder.close()
                holder, released = None, t
            sample: dict[str, Any] = {"t": round(t, 1), "holding": holder is not None}
            sample.update(xmin_alert(mon, S01.alert_s))
            sample.update(mon.execute(TABLE_STATS).fetchone() or {})
            sample["av_trigger"] = one(mon, AV_TRIGGER)
            if now >= next_window:
                done = one(mon, "SELECT count(*) FROM jobqueue.job_history WHERE state = 'completed'")
                pick = mon.execute(PICKUP_P99, (S01.window_s,)).fetchone() or {}
                sample["throughput"] = round((done - last_done) / (now - last_t), 1)
                sample["pickup_p99_s"] = pick.get("p99")
                sample["backlog"] = one(mon, "SELECT count(*) FROM jobqueue.job WHERE state <> 'processing'")
                last_done, last_t, next_window = done, now, next_window + S01.window_s
            samples.append(sample)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        producer.stop.set()
        producer.join(30)
        if holder is not None:  # the run was shorter than the hold
            holder.rollback()
            holder.close()
            released = time.monotonic() - t0
        wait_for(lambda: one(mon, "SELECT count(*) FROM jobqueue.job") == 0, 120, "the backlog to drain")
        workers_alive = all(p.poll() is None for p in workers.procs)
        workers.kill_all()  # nothing of this scenario runs on during the next
        finished = {
            r["state"]: r["n"] for r in mon.execute("SELECT state::text, count(*) AS n FROM jobqueue.jobs GROUP BY 1")
        }
    return {
        "url": url,
        "samples": samples,
        "hold_started": hold_started,
        "released": released,
        "enqueued": producer.enqueued,
        "producer_errors": producer.errors,
        "finished": finished,
        "ops02": ops02.report,
        "ops02_errors": ops02.errors,
        "workers_alive": workers_alive,
    }


def test_idle_in_tx_recovery(soak01: dict[str, Any], record: Callable[..., None]) -> None:
    """SOAK-01: the xmin alert fires during a 10-minute idle transaction; throughput and dead
    tuples recover after it ends."""
    samples, hold_at, released = soak01["samples"], soak01["hold_started"], soak01["released"]
    assert hold_at is not None and released is not None
    windows = [s for s in samples if "throughput" in s]
    base = [s["throughput"] for s in windows if S01.warmup_s <= s["t"] < hold_at]
    baseline = sum(base) / len(base)
    during = [s for s in samples if s["holding"]]
    before = [s for s in samples if s["t"] < hold_at]
    after = [s for s in samples if s["t"] >= released]
    fired = [s for s in during if s["alert"]]
    cleared = next((s["t"] - released for s in after if not s["alert"]), None)

    # Throughput recovered: a rolling 30 s of windows after release at >= 90 % of the baseline.
    per = max(1, round(30 / S01.window_s))
    after_w = [s for s in windows if s["t"] >= released]
    recovered = None
    for k in range(len(after_w) - per + 1):
        chunk = after_w[k : k + per]
        if sum(s["throughput"] for s in chunk) / per >= 0.9 * baseline:
            recovered = chunk[-1]["t"] - released
            break

    # Dead tuples of the hot table: back under max(20 % of live, autovacuum's own trigger)
    # within 3 autovacuum runs after release.
    av0 = after[0]["autovacuum_count"] if after else 0
    dead_ok = next((s for s in after if s["n_dead_tup"] <= max(0.2 * s["n_live_tup"], s["av_trigger"])), None)
    av_runs = None if dead_ok is None else dead_ok["autovacuum_count"] - av0
    peak_dead = max((s["n_dead_tup"] for s in during), default=0)
    pickup_during = [s["pickup_p99_s"] for s in windows if hold_at <= s["t"] < released and s.get("pickup_p99_s")]
    figures = {
        "size": S01.__dict__,
        "baseline_jobs_per_s": round(baseline, 1),
        "min_throughput_during_hold": min(
            (s["throughput"] for s in windows if hold_at <= s["t"] < released), default=None
        ),
        "throughput_recovered_after_s": None if recovered is None else round(recovered, 1),
        "oldest_xmin_age_s_max_during_hold": round(max((s["age_s"] for s in during), default=0), 1),
        "oldest_xmin_xid_age_max_during_hold": max((s["xid_age"] for s in during), default=0),
        "oldest_xmin_age_s_max_before_hold": round(max((s["age_s"] for s in before), default=0), 2),
        "alert_fired_after_s": None if not fired else round(fired[0]["t"] - hold_at, 1),
        "alert_cleared_after_release_s": None if cleared is None else round(cleared, 1),
        "peak_dead_tuples_job": peak_dead,
        "dead_tuples_ok_after_s": None if dead_ok is None else round(dead_ok["t"] - released, 1),
        "autovacuum_runs_to_recover": av_runs,
        "pickup_p99_s_max_during_hold": max(pickup_during, default=None),
        "enqueued": soak01["enqueued"],
        "final_states": soak01["finished"],
        "windows": [
            {
                k: s.get(k)
                for k in (
                    "t",
                    "throughput",
                    "pickup_p99_s",
                    "backlog",
                    "n_dead_tup",
                    "n_live_tup",
                    "age_s",
                    "xid_age",
                    "holding",
                )
            }
            for s in windows
        ],
    }
    criteria = [
        Criterion(
            "oldest_xmin_age alert fires during the hold",
            bool(fired),
            f"max {figures['oldest_xmin_age_s_max_during_hold']} s / {figures['oldest_xmin_xid_age_max_during_hold']}"
            f" xids vs threshold {S01.alert_s} s (before hold: {figures['oldest_xmin_age_s_max_before_hold']} s)",
        ),
        Criterion(
            "alert clears after release",
            cleared is not None and cleared <= 30,
            f"cleared {figures['alert_cleared_after_release_s']} s after release",
        ),
        Criterion(
            f"throughput >= 90% of baseline within {S01.recover_within_s:.0f} s",
            recovered is not None and recovered <= S01.recover_within_s,
            f"baseline {figures['baseline_jobs_per_s']} jobs/s; min during hold "
            f"{figures['min_throughput_during_hold']}; recovered after {figures['throughput_recovered_after_s']} s",
        ),
        Criterion(
            "n_dead_tup(job) back under max(20% live, autovacuum trigger) within 3 autovacuum runs",
            av_runs is not None and av_runs <= 3,
            f"peak {peak_dead}; ok {figures['dead_tuples_ok_after_s']} s after release, "
            f"after {av_runs} autovacuum run(s)",
        ),
        Criterion(
            "every job completed, none lost",
            set(soak01["finished"]) == {"completed"}
            and soak01["finished"]["completed"] == soak01["enqueued"]
            and not soak01["producer_errors"]
            and soak01["workers_alive"],
            f"{soak01['finished']} of {soak01['enqueued']} enqueued",
        ),
    ]
    record("SOAK-01", figures, criteria)
    for c in criteria:
        assert c.ok, f"{c.name}: {c.detail}"


def test_no_idle_in_transaction_workers(soak01: dict[str, Any], record: Callable[..., None]) -> None:
    """OPS-02 at soak size: pg_stat_activity every 100 ms during the whole SOAK-01 run."""
    report = soak01["ops02"]
    figures = {
        **report.figures(),
        "limit_idle_in_tx_s": 1.0,
        "slow_handler_s": SLOW_HANDLER_MS / 1000,
        "over_samples": (report.idle_in_tx_over + report.xact_over)[:20],
    }
    criteria = [
        Criterion(
            "sampled worker sessions",
            report.samples > 100 and len(report.sessions) >= 4 and not soak01["ops02_errors"],
            f"{report.samples} samples, {len(report.sessions)} sessions",
        ),
        Criterion(
            "no worker idle in transaction > 1 s", not report.idle_in_tx_over, f"max {figures['max_idle_in_tx_s']} s"
        ),
        Criterion(
            "no worker transaction held open > 1 s outside a statement",
            not report.xact_over,
            f"longest client-held worker transaction {figures['max_held_xact_s']} s (longest statement "
            f"{figures['max_statement_s']} s); slow handlers run "
            f"{SLOW_HANDLER_MS / 1000} s",
        ),
    ]
    record("OPS-02", figures, criteria)
    for c in criteria:
        assert c.ok, f"{c.name}: {c.detail}"


# -- SOAK-02 ---------------------------------------------------------------------------------

SIZES_SQL = """
SELECT CASE WHEN c.relname LIKE 'job_history%%' THEN 'job_history' ELSE c.relname END AS rel,
       sum(pg_relation_size(c.oid))::bigint AS heap, sum(pg_indexes_size(c.oid))::bigint AS idx
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'jobqueue' AND c.relkind = 'r'
GROUP BY 1
"""


def sizes(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = conn.execute(SIZES_SQL).fetchall()
    per = {r["rel"]: r["heap"] + r["idx"] for r in rows if r["heap"] + r["idx"] > 8192 * 4}
    return {"total": sum(r["heap"] + r["idx"] for r in rows), **dict(sorted(per.items()))}


@dataclass
class Probe:
    """Claims up to 10 jobs every 100 ms from the soak queue, times the call, completes them.

    Empty claims count too: with the workers keeping up, most claims find nothing, and how
    long finding nothing takes is what dead index entries slow down."""

    url: str
    done: Callable[[], int]
    samples: list[tuple[int, float]] = field(default_factory=list)
    hits: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="soak-probe") as conn:
            while not self.stop.wait(0.1):
                try:
                    started = time.perf_counter()
                    rows = conn.execute(
                        "SELECT id, token FROM jobqueue.claim(ARRAY['default'], 'probe', 10)"
                    ).fetchall()
                    elapsed = time.perf_counter() - started
                    self.samples.append((self.done(), elapsed))
                    if rows:
                        self.hits += 1
                        conn.execute(
                            "SELECT count(*) FROM jobqueue.complete_many(%s, %s)",
                            ([r[0] for r in rows], [r[1] for r in rows]),
                        )
                except psycopg.Error as exc:
                    self.errors.append(str(exc))


def test_table_size_bounded(
    soak_db: Callable[[str], str], workers_for: Callable[[str], Workers], record: Callable[..., None]
) -> None:
    """SOAK-02: a million jobs through with 1-minute retention: size and claim latency bounded."""
    url = soak_db("s02")
    n = S02.jobs
    with psycopg.connect(url, autocommit=True, row_factory=dict_row, application_name="soak-monitor") as mon:
        mon.execute(
            "UPDATE jobqueue.setting SET value = to_jsonb(%s::int) "
            "WHERE key IN ('history_retention_s', 'event_retention_s', 'log_retention_s')",
            (S02.retention_s,),
        )
        workers = workers_for(url)
        for i in range(2):
            workers.start("-c", "50", "--log-level", "WARNING", name=f"soak2-{i}")
        producer = Paced(url, S02.rate, limit=n, max_ms=0, slow_share=0)
        state = {"live": 0, "pruned": 0, "events_pruned": 0, "reconciles": 0}
        stop = threading.Event()
        errors: list[str] = []

        def done() -> int:
            return int(producer.enqueued - state["live"])

        def reconcile() -> None:  # what `SELECT jobqueue.reconcile(10000)` from pg_cron every second does
            with psycopg.connect(url, autocommit=True, application_name="soak-reconcile") as conn:
                while not stop.wait(1.0):
                    try:
                        summary = one(conn, "SELECT jobqueue.reconcile(10000)")
                        state["pruned"] += summary["history_pruned"]
                        state["events_pruned"] += summary["events_pruned"]
                        state["reconciles"] += 1
                    except psycopg.Error as exc:
                        errors.append(str(exc))

        probe = Probe(url, done)
        threads = [producer, *(threading.Thread(target=f, daemon=True) for f in (reconcile, probe.run))]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        steady: dict[str, Any] | None = None
        trace: list[dict[str, Any]] = []
        next_trace = 0
        while True:
            state["live"] = one(mon, "SELECT count(*) FROM jobqueue.job")
            finished = done()
            if steady is None and finished >= S02.steady_at:
                steady = {"jobs_done": finished, "t": round(time.monotonic() - t0, 1), **sizes(mon)}
            if finished >= next_trace:
                trace.append(
                    {
                        "jobs_done": finished,
                        "t": round(time.monotonic() - t0, 1),
                        **sizes(mon),
                        "dead_tup_job": one(
                            mon,
                            "SELECT n_dead_tup FROM pg_stat_user_tables "
                            "WHERE schemaname = 'jobqueue' AND relname = 'job'",
                        ),
                    }
                )
                next_trace += n // 20
            if producer.enqueued >= n and state["live"] == 0:
                break
            if not producer.is_alive() and producer.enqueued < n:
                pytest.fail(f"the producer stopped early: {producer.errors[:3]}")
            assert all(p.poll() is None for p in workers.procs), "a worker exited"
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        end = {"jobs_done": done(), "t": round(elapsed, 1), **sizes(mon)}
        stop.set()
        producer.stop.set()
        probe.stop.set()
        for th in threads:
            th.join(30)
        workers.kill_all()
        states = {
            r["state"]: r["n"]
            for r in mon.execute(
                "SELECT state::text, count(*) AS n FROM jobqueue.jobs WHERE state <> 'completed' GROUP BY 1"
            )
        }
    assert steady is not None
    lo, hi = S02.steady_at // 2, S02.steady_at * 3 // 2
    start_lat = [s for d, s in probe.samples if lo <= d < hi]
    end_lat = [s for d, s in probe.samples if d >= n * 0.9]
    p99_start, p99_end = percentile(start_lat, 99), percentile(end_lat, 99)
    figures = {
        "size": S02.__dict__,
        "seconds": round(elapsed, 1),
        "jobs_per_s": round(n / elapsed, 1),
        "steady": steady,
        "end": end,
        "size_ratio_end_vs_steady": round(end["total"] / steady["total"], 2),
        "claim_p99_ms_start": ms(p99_start),
        "claim_p50_ms_start": ms(percentile(start_lat, 50)),
        "claim_p99_ms_end": ms(p99_end),
        "claim_p50_ms_end": ms(percentile(end_lat, 50)),
        "claim_samples_start_end": [len(start_lat), len(end_lat)],
        "probe_claims_with_rows": probe.hits,
        "max_backlog": max((t.get("backlog", 0) for t in trace), default=0),
        "history_pruned": state["pruned"],
        "events_pruned": state["events_pruned"],
        "reconcile_runs": state["reconciles"],
        "errors": (errors + probe.errors + producer.errors)[:10],
        "trace": trace,
    }
    ratio = figures["size_ratio_end_vs_steady"]
    criteria = [
        Criterion(
            "heap+index at end <= 3x at steady state",
            ratio <= 3,
            f"{steady['total'] / 2**20:.1f} MiB at {steady['jobs_done']:,} jobs -> {end['total'] / 2**20:.1f} MiB"
            f" at {end['jobs_done']:,} (x{ratio})",
        ),
        Criterion(
            "claim p99 at end <= 2x start",
            p99_start is not None and p99_end is not None and p99_end <= 2 * p99_start,
            f"p99 {figures['claim_p99_ms_start']} ms -> {figures['claim_p99_ms_end']} ms "
            f"({len(start_lat)} / {len(end_lat)} claims)",
        ),
        Criterion(
            "every job completed, no errors",
            not states and not errors and not probe.errors,
            f"{n:,} jobs in {elapsed:.0f} s ({figures['jobs_per_s']} jobs/s); left: {states or 'none'}",
        ),
    ]
    record("SOAK-02", figures, criteria)
    for c in criteria:
        assert c.ok, f"{c.name}: {c.detail}"


# -- OPS-01 ----------------------------------------------------------------------------------


def bench_cost(url: str, concurrency: int, out: Path) -> dict[str, dict[str, Any]]:
    command = [
        sys.executable,
        "-m",
        "jobqueue",
        "--database-url",
        url,
        "bench",
        "--only",
        "cost",
        "--drain-concurrency",
        str(concurrency),
        "--max-seconds",
        "900",
        "--no-progress",
        "--json",
        str(out),
    ]
    if BENCH_QUICK:
        command.append("--quick")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=1800)
    rows = json.loads(out.read_text())["scenarios"]["cost"]["rows"]
    return {r["key"]: {**r["extra"], "jobs": r["jobs"], "partial": r["partial"]} for r in rows}


def test_xids_per_job(soak_db: Callable[[str], str], tmp_path: Path, record: Callable[..., None]) -> None:
    """OPS-01: xids (write transactions) per job through enqueue -> claim -> complete."""
    url = soak_db("ops01")
    single = bench_cost(url, 1, tmp_path / "cost-c1.json")
    batched = bench_cost(url, 50, tmp_path / "cost-c50.json")
    keys = ("xids_per_job", "xacts_per_job", "wal_bytes_per_job")
    s = {k: round(single["cost.enqueue.single"][k] + single["cost.drain"][k], 3) for k in keys}
    b = {k: round(batched["cost.enqueue.many_json"][k] + batched["cost.drain"][k], 3) for k in keys}
    epsilon = 0.02
    figures = {
        "single": {
            **s,
            "paths": "enqueue() 1 tx/job + worker -c 1 (claim 1, complete 1)",
            "jobs": [single["cost.enqueue.single"]["jobs"], single["cost.drain"]["jobs"]],
        },
        "batched": {
            **b,
            "paths": "enqueue_many 100/call (JSON) + worker -c 50 (claim <= 50, complete_many)",
            "jobs": [batched["cost.enqueue.many_json"]["jobs"], batched["cost.drain"]["jobs"]],
        },
        "rows": {"c1": single, "c50": batched},
        "epsilon": epsilon,
    }
    partial = any(r.get("partial") for r in (*single.values(), *batched.values()))
    criteria = [
        Criterion(
            f"xids per job, single path <= 3 + {epsilon}",
            s["xids_per_job"] <= 3 + epsilon,
            f"{s['xids_per_job']} xids/job ({s['xacts_per_job']} transactions/job, "
            f"{s['wal_bytes_per_job']:.0f} WAL bytes/job)",
        ),
        Criterion(
            f"xids per job, batched <= 3/50 + {epsilon}",
            b["xids_per_job"] <= 3 / 50 + epsilon,
            f"{b['xids_per_job']} xids/job ({b['xacts_per_job']} transactions/job, "
            f"{b['wal_bytes_per_job']:.0f} WAL bytes/job)",
        ),
        Criterion("measurements complete", not partial, "no bench row partial" if not partial else "partial rows"),
    ]
    record("OPS-01", figures, criteria)
    for c in criteria:
        assert c.ok, f"{c.name}: {c.detail}"
