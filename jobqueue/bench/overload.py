"""`jobqueue bench --only overload`: throughput while the backlog grows, and the drain after.

One run, the same real ``jobqueue worker`` processes throughout, in the bench's scratch
database (see :mod:`jobqueue.bench`):

capacity  C jobs loaded (not timed), then the workers start and drain them; the drain rate on
          the database clock (first ``claimed_at`` to last ``finished_at``) is the capacity:
          an empty-queue drain of the worker setup used
overload  a paced producer (``enqueue_many`` calls of at most 128 jobs, JSON path) offers
          ``--overload-factor`` x capacity (1.3 by default) for ``--duration`` seconds: the
          backlog grows
recovery  the producer offers half of the capacity; the backlog must drain at full rate
reference (with ``--backlog-jobs N`` > 0) the queue drains, the workers stop, C jobs are
          loaded into the empty queue, the workers start again while the producer offers
          half of the capacity: the empty-queue drain under that offered load
backlog   the same with N jobs (1,000,000 at full size): the rate at which the N-job backlog
          drains, against the reference

Every ``--window`` seconds (5) a sampler reads, on its own connection: the enqueues
(``jobqueue.job_id_seq``) and claims (``jobqueue.lease_token_seq``: one token per claimed
job) of the window; completions (no job fails here, so every claim is completed one handler
run later; the totals are checked against ``jobqueue.job_history`` at the end); the backlog
(jobs enqueued and not claimed); the claim's server-side time per call from
``pg_stat_statements`` (the claim's locking statement inside ``jobqueue.claim``, with its
shared buffers per call) when the server preloads it, and from ``pg_stat_user_functions``
(``track_functions = all``) otherwise; an ``EXPLAIN (ANALYZE, BUFFERS)`` of the same locking
statement under a generic plan (as the function runs it), in a transaction rolled back;
``pg_stat_user_tables`` / ``pg_stat_user_indexes`` of ``jobqueue.job`` (dead and live tuples,
autovacuum and autoanalyze runs, index entries read per index scan) and ``pgstatindex`` of
the claim index when ``pgstattuple`` can be created; and where the cores went in the window
(the worker, the bench's producer, the server backends of each, the sampler's own, autovacuum:
:mod:`jobqueue.bench.cpu`). The windows go to a JSON file, and a
PNG plot of completions and backlog over time is written next to it (matplotlib, the
``bench`` extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobqueue.bench.config import BenchError, Measured
from jobqueue.bench.core import Bench, chunks, noop_jobs
from jobqueue.bench.cpu import SAMPLER_APP, CpuSampler
from jobqueue.bench.overload_plot import plot
from jobqueue.bench.overload_verdict import FLOOR, Window, summarize
from jobqueue.bench.processes import Workers
from jobqueue.bench.registry import scenario
from jobqueue.bench.statements import NOOP_TYPE, QUEUE

#: The overload window at full size, and with --quick.
DURATION_S = 600.0
QUICK_DURATION_S = 40.0
WINDOW_S = 5.0
#: --quick (a smoke run): shorter windows, so each phase's end is seen sooner.
QUICK_WINDOW_S = 2.0
FACTOR = 1.3
#: Offered rate after the overload window, as a fraction of the capacity.
RECOVERY_FACTOR = 0.5
#: Worker setup: one process, 32 handler slots (as in the issue's benchmark).
WORKERS = 1
CONCURRENCY = 32
#: Largest enqueue_many call of the producer (below COPY_THRESHOLD: the JSON path).
PRODUCER_BATCH = 128
PRODUCER_TICK_S = 0.01
CAPACITY_JOBS = 50_000
QUICK_CAPACITY_JOBS = 10_000
BACKLOG_JOBS = 1_000_000
QUICK_BACKLOG_JOBS = 30_000
LOAD_CHUNK = 10_000

# -- what the sampler reads -----------------------------------------------------------------

SEQUENCES = """
SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM jobqueue.job_id_seq) AS enqueued,
       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM jobqueue.lease_token_seq) AS claimed,
       clock_timestamp() AS at
"""
TABLE_STATS = """
SELECT n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count, vacuum_count, analyze_count,
       last_autovacuum, last_autoanalyze, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del,
       pg_relation_size('jobqueue.job') AS heap_bytes
FROM pg_stat_user_tables WHERE relid = 'jobqueue.job'::regclass
"""
INDEX_STATS = """
SELECT s.indexrelname, s.idx_scan, s.idx_tup_read, s.idx_tup_fetch, pg_relation_size(s.indexrelid) AS bytes
FROM pg_stat_user_indexes s WHERE s.relid = 'jobqueue.job'::regclass
"""
#: The claim's locking statement inside jobqueue.claim (pg_stat_statements.track = all).
CLAIM_STATEMENT = """
SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)::float8,
       coalesce(sum(shared_blks_hit + shared_blks_read), 0)::bigint, coalesce(sum(rows), 0)::bigint,
       coalesce(max(max_exec_time), 0)::float8
FROM pg_stat_statements
WHERE dbid = %s AND NOT toplevel
  AND query LIKE '%%FROM jobqueue.job j%%ORDER BY j.priority DESC, j.run_at, j.id%%FOR UPDATE SKIP LOCKED%%'
"""
WAL_STATS = "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
#: Checkpoints begun so far (pg_stat_checkpointer from PostgreSQL 17, pg_stat_bgwriter before).
CHECKPOINTS = {
    True: "SELECT num_timed + num_requested FROM pg_stat_checkpointer",
    False: "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
}
CLAIM_FUNCTION = """
SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_time), 0)::float8
FROM pg_stat_user_functions WHERE schemaname = 'jobqueue' AND funcname = 'claim'
"""
#: The locking SELECT of jobqueue.claim (one queue), as the function plans it: a generic plan
#: with the queue, the batch and the types as parameters.
CLAIM_PREPARE = """
PREPARE jq_overload_claim(text, integer, text[]) AS
SELECT j.id, j.state
FROM jobqueue.job j
WHERE j.queue = $1
  AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
  AND j.run_at <= now()
  AND (j.expires_at IS NULL OR j.expires_at > now())
  AND ($3 IS NULL OR j.type = ANY ($3))
ORDER BY j.priority DESC, j.run_at, j.id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
CLAIM_EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE jq_overload_claim({}, {}, NULL)"
PGSTATINDEX = """
SELECT leaf_pages, deleted_pages, empty_pages, avg_leaf_density, leaf_fragmentation
FROM pgstatindex(%s)
"""
DRAINED_SINCE = """
SELECT count(*)::bigint, extract(epoch FROM max(finished_at) - min(claimed_at))::float8
FROM jobqueue.job_history WHERE state = 'completed' AND type = %s AND id > %s
"""
#: Cheap at any backlog (a count(*) of a million waiting jobs every 0.2 s would cost a core).
EMPTY = "SELECT NOT EXISTS (SELECT 1 FROM jobqueue.job)"
HISTORY_COUNT = "SELECT count(*) FROM jobqueue.job_history WHERE state = 'completed' AND type = %s"


@dataclass(frozen=True)
class OverloadConfig:
    duration_s: float = DURATION_S
    factor: float = FACTOR
    rate: float | None = None
    workers: int = WORKERS
    concurrency: int = CONCURRENCY
    window_s: float = WINDOW_S
    capacity_jobs: int = CAPACITY_JOBS
    backlog_jobs: int = 0
    #: Longest time the recovery phase waits for the backlog to drain.
    recovery_max_s: float | None = None

    @classmethod
    def from_bench(cls, config: Any) -> OverloadConfig:
        """From ``jobqueue bench`` options (``BenchConfig.extra``); refuses nonsense, naming the option."""
        quick = bool(config.quick)
        extra: dict[str, Any] = dict(config.extra or {})
        duration = extra.get("duration_s") or (QUICK_DURATION_S if quick else DURATION_S)
        backlog = extra.get("backlog_jobs")
        if backlog is None:
            backlog = QUICK_BACKLOG_JOBS if quick else BACKLOG_JOBS
        factor = extra.get("factor") or FACTOR
        rate = extra.get("rate")
        concurrency = extra.get("concurrency") or CONCURRENCY
        workers = extra.get("workers") or WORKERS
        if not 10 <= float(duration) <= 86_400:
            raise BenchError("duration: must be between 10 and 86400 seconds")
        if not 0 <= int(backlog) <= 10_000_000:
            raise BenchError("backlog_jobs: must be between 0 and 10000000")
        if not 1.0 < float(factor) <= 10:
            raise BenchError("overload_factor: must be more than 1 and at most 10")
        if rate is not None and not 1 <= float(rate) <= 1_000_000:
            raise BenchError("overload_rate: must be between 1 and 1000000 jobs/s")
        if not 1 <= int(workers) <= 64:
            raise BenchError("overload_workers: must be between 1 and 64")
        return cls(
            duration_s=float(duration),
            factor=float(factor),
            rate=None if rate is None else float(rate),
            concurrency=int(concurrency),
            workers=int(workers),
            capacity_jobs=QUICK_CAPACITY_JOBS if quick else CAPACITY_JOBS,
            backlog_jobs=int(backlog),
            window_s=float(extra.get("window_s") or (QUICK_WINDOW_S if quick else WINDOW_S)),
        )


@dataclass
class RunState:
    windows: list[Window] = field(default_factory=list)
    phase: str = "idle"
    offered: float = 0.0
    plans: dict[str, str] = field(default_factory=dict)


class PacedProducer(ABC):
    """Offers ``rate`` jobs per second in calls of at most PRODUCER_BATCH jobs, 100 times a
    second (PRODUCER_TICK_S), from a thread: the overload's pacing, whatever a call sends to
    (:meth:`send`; bench/overload_raw.py paces a minimal queue with it)."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="overload-producer", daemon=True)
        self._base_t = time.monotonic()
        self._base_sent = 0

    @abstractmethod
    def send(self, start: int, size: int) -> None:
        """Enqueue ``size`` jobs numbered from ``start``."""

    @abstractmethod
    def close(self) -> None:
        """Release what :meth:`send` holds (after the thread stopped)."""

    def start(self) -> None:
        self._thread.start()

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._base_t = time.monotonic()
            self._base_sent = self.sent
            self.rate = rate

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (a run that failed before may not have)
            self._thread.join(30)
        self.close()

    def _run(self) -> None:
        """Every PRODUCER_TICK_S, enqueue what the rate has made due since the last tick, in
        calls of at most PRODUCER_BATCH jobs, then sleep to the next tick. (Sending whatever
        was due as soon as the previous call returned made ~1,000 calls a second of ~10 jobs
        at 9,600 jobs/s: the producer's own server cost was then most of a core.)"""
        try:
            tick = time.monotonic()
            while not self._stop.is_set():
                with self._lock:
                    due = int(self.rate * (time.monotonic() - self._base_t)) - (self.sent - self._base_sent)
                while due > 0 and not self._stop.is_set():
                    size = min(due, PRODUCER_BATCH)
                    self.send(self.sent, size)
                    self.sent += size
                    due -= size
                tick += PRODUCER_TICK_S
                now = time.monotonic()
                if tick > now:
                    self._stop.wait(tick - now)
                else:
                    tick = now  # behind: the next tick's due catches up, in calls of PRODUCER_BATCH
        except BaseException as exc:
            self.error = exc


class Producer(PacedProducer):
    """The paced producer of the overload run: ``enqueue_many`` of the bench's noop jobs."""

    def __init__(self, url: str) -> None:
        from jobqueue.client import JobQueue

        super().__init__()
        self.jq = JobQueue(url, pool_size=1, application_name="jobqueue-bench-producer")

    def start(self) -> None:
        self.jq.check_schema()
        super().start()

    def send(self, start: int, size: int) -> None:
        self.jq.enqueue_many(noop_jobs(start, size))

    def close(self) -> None:
        self.jq.close()


class Overload:
    def __init__(self, bench: Bench, config: OverloadConfig) -> None:
        self.bench = bench
        self.config = config
        self.scratch = bench.scratch
        self.state = RunState()
        self.t0 = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.statements = False
        self.pgstattuple = False
        self.capacity: float | None = None
        self.summary: dict[str, Any] = {}
        self.workers: Workers | None = None
        self.cpu = CpuSampler(self._worker_pids)

    # -- helpers ---------------------------------------------------------------------------

    def _spawn(self) -> Workers:
        self.workers = self.bench.spawn_workers(self.config.workers, self.config.concurrency, burst=False)
        return self.workers

    def _worker_pids(self) -> list[int]:
        return [proc.pid for proc, _ in self.workers.procs] if self.workers is not None else []

    def _load(self, n: int, label: str) -> None:
        from jobqueue.client import JobQueue

        self.bench.begin(label, n)
        with JobQueue(self.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
            done = 0
            for start, size in chunks(n, LOAD_CHUNK):
                jq.enqueue_many(noop_jobs(start, size))
                done += size
                self.bench.advance(done)

    def _prepare(self) -> None:
        with self.scratch.connect() as conn:
            with contextlib.suppress(psycopg.Error):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT pg_stat_statements_reset()")
                self.statements = True
            with contextlib.suppress(psycopg.Error):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
                self.pgstattuple = True

    # -- the sampler -----------------------------------------------------------------------

    def _sampler(self, stop: threading.Event, errors: list[BaseException]) -> None:
        try:
            with self.scratch.connect() as conn:
                conn.execute("SET plan_cache_mode = force_generic_plan")
                conn.execute(sql.SQL("SET application_name = {}").format(sql.Literal(SAMPLER_APP)))
                conn.execute("SET statement_timeout = '30s'")
                conn.execute(CLAIM_PREPARE)
                prev = self._read(conn)
                while not stop.wait(max(self.config.window_s - (time.monotonic() - prev["mono"]), 0.0)):
                    cur = self._read(conn)
                    self._window(conn, prev, cur)
                    prev = cur
        except BaseException as exc:
            errors.append(exc)

    def _read(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        row = conn.execute(SEQUENCES).fetchone()
        assert row is not None
        out: dict[str, Any] = {"mono": time.monotonic(), "enqueued": int(row[0]), "claimed": int(row[1])}
        if self.statements:
            s = conn.execute(CLAIM_STATEMENT, (self.scratch.oid,)).fetchone()
            assert s is not None
            out["stmt"] = (int(s[0]), float(s[1]), int(s[2]), int(s[3]), float(s[4]))
        f = conn.execute(CLAIM_FUNCTION).fetchone()
        out["func"] = (int(f[0]), float(f[1])) if f else (0, 0.0)
        out["cpu"] = self.cpu.read(conn)
        w = conn.execute(WAL_STATS).fetchone()
        c = conn.execute(CHECKPOINTS[conn.info.server_version >= 170000]).fetchone()
        if w is not None and c is not None:
            out["wal"] = (int(w[0]), int(w[1]), float(w[2]), int(c[0]))
        return out

    def _window(self, conn: psycopg.Connection[Any], prev: dict[str, Any], cur: dict[str, Any]) -> None:
        seconds = max(cur["mono"] - prev["mono"], 1e-6)
        enq = cur["enqueued"] - prev["enqueued"]
        claims = cur["claimed"] - prev["claimed"]
        claim_ms = buffers = max_ms = None
        calls = 0
        source = "none"
        if self.statements and "stmt" in cur and "stmt" in prev:
            calls = cur["stmt"][0] - prev["stmt"][0]
            source = "pg_stat_statements (the locking statement inside jobqueue.claim)"
            if calls > 0:
                claim_ms = (cur["stmt"][1] - prev["stmt"][1]) / calls
                buffers = (cur["stmt"][2] - prev["stmt"][2]) / calls
            max_ms = cur["stmt"][4]
        else:
            calls = cur["func"][0] - prev["func"][0]
            source = "pg_stat_user_functions (jobqueue.claim total time)"
            if calls > 0:
                claim_ms = (cur["func"][1] - prev["func"][1]) / calls
        table_cur = conn.execute(TABLE_STATS)
        table_row = table_cur.fetchone()
        table: dict[str, Any] = {}
        if table_row is not None:
            names = [d.name for d in (table_cur.description or [])]
            table = {
                k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in zip(names, table_row, strict=True)
            }
        indexes = {
            str(r[0]): {"idx_scan": r[1], "idx_tup_read": r[2], "idx_tup_fetch": r[3], "bytes": r[4]}
            for r in conn.execute(INDEX_STATS).fetchall()
        }
        claim_index = None
        if self.pgstattuple:
            try:
                r = conn.execute(PGSTATINDEX, ("jobqueue.job_claim_idx",)).fetchone()
                if r is not None:
                    claim_index = {
                        "leaf_pages": r[0],
                        "deleted_pages": r[1],
                        "empty_pages": r[2],
                        "avg_leaf_density": r[3],
                        "leaf_fragmentation": r[4],
                    }
            except psycopg.Error:
                claim_index = None
        explain = self._explain(conn)
        t = round(cur["mono"] - self.t0, 2)
        backlog = max(cur["enqueued"] - cur["claimed"], 0)
        w = Window(
            t=t,
            phase=self.state.phase,
            offered=self.state.offered,
            enqueued=enq,
            claimed=claims,
            enqueue_rate=round(enq / seconds, 1),
            completion_rate=round(claims / seconds, 1),
            backlog=backlog,
            claim_calls=calls,
            claim_ms=None if claim_ms is None else round(claim_ms, 3),
            claim_source=source,
            claim_buffers=None if buffers is None else round(buffers, 1),
            claim_max_ms=None if max_ms is None else round(max_ms, 2),
            explain=explain,
            table=table,
            indexes=indexes,
            claim_index=claim_index,
            loadavg_1m=round(os.getloadavg()[0], 2),
            cpu=CpuSampler.window(prev.get("cpu"), cur.get("cpu"), seconds),
            wal=_wal_window(prev.get("wal"), cur.get("wal")),
        )
        self.state.windows.append(w)
        self.bench.advance(len(self.state.windows))

    def _explain(self, conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
        try:
            with conn.transaction(force_rollback=True):
                statement = sql.SQL(CLAIM_EXPLAIN).format(sql.Literal(QUEUE), sql.Literal(self.config.concurrency))
                row = conn.execute(statement).fetchone()
        except psycopg.Error as exc:
            return {"error": str(exc).strip()}
        if row is None:
            return None
        doc = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
        plan = doc["Plan"]
        nodes: list[str] = []
        scan: dict[str, Any] = {}

        def walk(node: dict[str, Any]) -> None:
            name = str(node.get("Node Type", "?"))
            if "Relation Name" in node or "Index Name" in node:
                name += f" {node.get('Index Name') or node.get('Relation Name')}"
                scan.update(
                    rows=node.get("Actual Rows"),
                    removed=node.get("Rows Removed by Filter"),
                    hit=node.get("Shared Hit Blocks"),
                    read=node.get("Shared Read Blocks"),
                )
            nodes.append(name)
            for child in node.get("Plans", []):
                walk(child)

        walk(plan)
        summary = {
            "plan": " > ".join(nodes),
            "ms": round(float(doc.get("Execution Time", 0.0)), 3),
            "shared_hit": plan.get("Shared Hit Blocks"),
            "shared_read": plan.get("Shared Read Blocks"),
            "rows": plan.get("Actual Rows"),
            "scan": scan,
        }
        key = summary["plan"]
        if key not in self.state.plans:
            self.state.plans[key] = json.dumps(doc)
        return summary

    # -- phases ----------------------------------------------------------------------------

    def _wait_empty(self, workers: Workers, deadline: float) -> bool:
        with self.scratch.connect() as conn:
            while time.monotonic() < deadline:
                if workers.exited():
                    workers.stop(graceful=False)
                row = conn.execute(EMPTY).fetchone()
                if row is not None and row[0]:
                    return True
                time.sleep(0.25)
        return False

    def _last_history_id(self) -> int:
        with self.scratch.connect() as conn:
            row = conn.execute("SELECT coalesce(max(id), 0) FROM jobqueue.job_history").fetchone()
        return int(row[0]) if row else 0

    def _measure_drain(self, workers: Workers, n: int, after_id: int, deadline: float) -> Measured:
        started = time.time()
        complete = self._wait_empty(workers, deadline)
        with self.scratch.connect() as conn:
            row = conn.execute(DRAINED_SINCE, (NOOP_TYPE, after_id)).fetchone()
        assert row is not None
        done, seconds = int(row[0]), float(row[1] or (time.time() - started))
        return Measured(done, seconds, not complete)

    def run(self) -> dict[str, Any]:
        cfg = self.config
        self.scratch.reset()
        self._prepare()
        self.t0 = time.monotonic()
        stop = threading.Event()
        errors: list[BaseException] = []
        sampler = threading.Thread(target=self._sampler, args=(stop, errors), name="overload-sampler", daemon=True)
        producer: Producer | None = None
        workers: Workers | None = None
        try:
            # capacity: an empty-queue drain of the worker setup used
            self._load(cfg.capacity_jobs, f"overload: loading {cfg.capacity_jobs:,} jobs for the capacity drain")
            self.state.phase = "capacity"
            sampler.start()
            self.bench.begin("overload: capacity drain", None)
            workers = self._spawn()
            m = self._measure_drain(workers, cfg.capacity_jobs, 0, time.monotonic() + 600)
            if m.jobs == 0:
                raise BenchError("overload: the capacity drain completed no job")
            self.capacity = m.rate
            capacity = self.capacity
            rate = cfg.rate or cfg.factor * capacity
            self.summary["capacity"] = {"jobs": m.jobs, "seconds": round(m.seconds, 3), "rate": round(m.rate, 1)}

            # overload: offered rate above capacity for the whole window
            producer = Producer(self.scratch.url)
            producer.start()
            self.state.phase, self.state.offered = "overload", round(rate, 1)
            producer.set_rate(rate)
            self.bench.begin(
                f"overload: offering {rate:,.0f}/s (capacity {capacity:,.0f}/s) for {cfg.duration_s:g} s", None
            )
            self._sleep(cfg.duration_s, producer, errors)

            # recovery: half of the capacity until the backlog is gone
            half = RECOVERY_FACTOR * capacity
            self.state.phase, self.state.offered = "recovery", round(half, 1)
            producer.set_rate(half)
            self.bench.begin(f"overload: recovery, offering {half:,.0f}/s", None)
            # long enough to show the drain rate; the backlog need not be gone when it ends
            limit = cfg.recovery_max_s or max(cfg.duration_s * 0.5, 60.0)
            end = time.monotonic() + limit
            while time.monotonic() < end:
                self._sleep(cfg.window_s, producer, errors)
                last = self.state.windows[-1] if self.state.windows else None
                if last is not None and last.phase == "recovery" and last.backlog <= half * cfg.window_s:
                    break
            self.state.phase = "recovered"
            self._sleep(2 * cfg.window_s, producer, errors)

            if cfg.backlog_jobs > 0:
                self._backlog_phase(producer, workers, half, errors)
                workers = self.bench_workers
        finally:
            if producer is not None:
                producer.stop()
            stop.set()
            if sampler.is_alive():
                sampler.join(60)
            if workers is not None:
                workers.stop()
        if errors:
            raise BenchError(f"overload sampler: {errors[0]}")
        if producer is not None and producer.error is not None:
            raise BenchError(f"overload producer: {producer.error}")
        return self.report(producer.sent if producer else 0)

    bench_workers: Workers | None = None

    def _backlog_phase(self, producer: Producer, workers: Workers, half: float, errors: list[BaseException]) -> None:
        """The reference drain (a small load into the empty queue), then the big backlog's drain,
        both while the producer offers half the capacity: the same offered load and the same
        worker, so that the only difference is the size of the backlog."""
        cfg = self.config
        # 30 s of capacity (at least --capacity-jobs): with half the capacity offered the queue
        # drains at about half its rate, so the reference lasts about a minute, enough windows
        # to average (50,000 jobs at 6,000 jobs/s left one window with a backlog worth judging)
        reference = min(max(cfg.capacity_jobs, int(30 * (self.capacity or 0.0))), cfg.backlog_jobs)
        for phase, n in (("reference", reference), ("backlog", cfg.backlog_jobs)):
            producer.set_rate(0)
            self.state.phase, self.state.offered = f"{phase}-load", 0.0
            self.bench.begin(f"overload: waiting for the queue to drain before the {phase} load", None)
            self._wait_empty(workers, time.monotonic() + 900)
            workers.stop()
            self._load(n, f"overload: loading {n:,} jobs ({phase})")
            self.state.phase, self.state.offered = phase, round(half, 1)
            self.bench.begin(f"overload: {phase}: draining {n:,} while offering {half:,.0f}/s", None)
            workers = self.bench_workers = self._spawn()
            producer.set_rate(half)
            # the drain rate while the backlog lasts, over at most max(duration, 300 s)
            end = time.monotonic() + max(min(4 * n / max(self.capacity or 1.0, 1.0), max(cfg.duration_s, 300.0)), 60.0)
            while time.monotonic() < end:
                self._sleep(cfg.window_s, producer, errors)
                last = self.state.windows[-1] if self.state.windows else None
                if last is not None and last.phase == phase and last.backlog <= half * cfg.window_s:
                    break
        self.state.phase = "done"
        self._sleep(cfg.window_s, producer, errors)

    def _sleep(self, seconds: float, producer: Producer, errors: list[BaseException]) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if producer.error is not None:
                raise BenchError(f"overload producer: {producer.error}")
            if errors:
                raise BenchError(f"overload sampler: {errors[0]}")
            time.sleep(min(0.5, max(end - time.monotonic(), 0.0)))

    # -- the verdict -----------------------------------------------------------------------

    def report(self, sent: int) -> dict[str, Any]:
        return summarize(
            self.state.windows, self.summary.get("capacity"), self.config.window_s, self.config.backlog_jobs, sent
        )


WalRead = tuple[int, int, float, int]


def _wal_window(prev: WalRead | None, cur: WalRead | None) -> dict[str, float] | None:
    """The WAL written and the checkpoints begun between two reads."""
    if prev is None or cur is None:
        return None
    return {
        "records": cur[0] - prev[0],
        "fpi": cur[1] - prev[1],
        "mb": round((cur[2] - prev[2]) / 1e6, 2),
        "checkpoints": cur[3] - prev[3],
    }


def resummarize(path: Path) -> dict[str, Any]:
    """Recompute the summary of an overload JSON (and its PNG beside it) with this version's rules."""
    document: dict[str, Any] = json.loads(path.read_text())
    windows = [Window(**w) for w in document["windows"]]
    old = document["summary"]
    document["summary"] = summarize(
        windows,
        old.get("capacity"),
        float(document["config"]["window_s"]),
        int(document["config"]["backlog_jobs"]),
        int(old.get("jobs_offered") or 0),
    )
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    plot(document, path.with_suffix(".png"))
    return dict(document["summary"])


@scenario("overload", on_demand=True)
def run_scenario(bench: Bench, budget_s: float) -> None:
    """The ``overload`` scenario of ``jobqueue bench`` (the budget does not bound it: --duration does)."""
    cfg = OverloadConfig.from_bench(bench.config)
    started = datetime.now(UTC)
    o = Overload(bench, cfg)
    failure: BaseException | None = None
    try:
        summary = o.run()
    except BaseException as exc:  # interrupted or failed: keep what was measured, then re-raise
        failure = exc
        summary = o.report(0)
        summary["interrupted"] = f"{type(exc).__name__}: {exc}"
    document: dict[str, Any] = {
        "title": (
            f"jobqueue bench overload: {cfg.workers} worker(s) -c {cfg.concurrency}, "
            f"offered {summary.get('offered_overload')}/s then {summary.get('offered_recovery')}/s "
            f"({started:%Y-%m-%d %H:%M} UTC, load avg at start {os.getloadavg()[0]:.1f})"
        ),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "config": {
            "duration_s": cfg.duration_s,
            "factor": cfg.factor,
            "rate": cfg.rate,
            "workers": cfg.workers,
            "concurrency": cfg.concurrency,
            "window_s": cfg.window_s,
            "capacity_jobs": cfg.capacity_jobs,
            "backlog_jobs": cfg.backlog_jobs,
            "producer_batch": PRODUCER_BATCH,
        },
        "claim_time_source": "pg_stat_statements" if o.statements else "pg_stat_user_functions",
        "summary": summary,
        "plans": {k: json.loads(v) for k, v in o.state.plans.items()},
        "windows": [w.__dict__ for w in o.state.windows],
    }
    base = bench.config.json_path or Path("bench-results") / f"overload-{started:%Y%m%d-%H%M%S}.json"
    json_path = base.with_name(base.stem + ".overload.json") if bench.config.json_path else base
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    png = plot(document, json_path.with_suffix(".png"))
    if failure is not None:
        raise failure
    m = Measured(
        int(sum(w.claimed for w in o.state.windows if w.phase == "overload")),
        float(sum(cfg.window_s for w in o.state.windows if w.phase == "overload")) or 1.0,
        False,
        extra={**summary, "json": str(json_path), "png": str(png) if png else None},
    )
    row = bench.record("overload", "overload", "completions while the backlog grows", "jobqueue", cfg.workers, 0, m)
    row.target = f"min >= {FLOOR:.0%} of peak"
    row.met = bool(summary.get("met_overload")) and bool(summary.get("met_recovery"))
    if "met_backlog" in summary:
        row.met = row.met and bool(summary["met_backlog"])
