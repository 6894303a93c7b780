"""`jobqueue bench`: jobqueue against a raw-SQL baseline, on one server, in one run.

Everything runs in a scratch database on the server the bench is pointed at
(``<database>_bench``, cloned for every measurement from ``<database>_bench_template``,
which is migrated with :func:`jobqueue.migrations.upgrade`), so real jobs are never touched.
Both are dropped and recreated per run (and dropped at the end unless ``--keep``).

Scenarios (each bounded by ``--max-seconds``: a measurement that runs out of time stops
early and reports the rate it reached, marked partial):

baseline  the least work a queue can do, in plain psycopg on a plain table: COPY N rows;
          one INSERT (with a NOTIFY) per transaction, 1 and 4 processes; claim 100 rows
          with a SKIP LOCKED CTE and delete them, 1 and 2 processes
enqueue   JobQueue.enqueue_many (its COPY path); JobQueue.enqueue, one transaction per job,
          1 and 4 producer processes
drain     N no-op jobs drained by real `jobqueue worker --burst` processes, 1 and 2
latency   an idle worker; jobs enqueued one by one at 50/s and 500/s; commit -> handler start
history   drain with 1,000,000 finished jobs retained in jobqueue.job_history vs none
cost      transactions, xids, WAL bytes and statements per job, single and batched paths

Every jobqueue row carries its ratio to the matching baseline row, measured in the same run
on the same server. Processes, never threads, stand for "processes" (the GIL). ``--peers
PYTHON`` also runs the same enqueue, drain and latency workloads on Procrastinate and
PgQueuer through the drivers in ``bench/peers/`` (``make bench-peers``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import bench_schedules
from jobqueue.client import COPY_THRESHOLD
from jobqueue.config import DatabaseTarget, redact
from jobqueue.errors import JobQueueError

SCENARIOS = ("baseline", "enqueue", "drain", "latency", "history", "cost")
PEER_SCENARIOS = ("enqueue", "drain", "latency")
#: Run only when named in --only: the module that implements each (a ``run_scenario(bench,
#: budget_s)`` function) and the options it reads from ``BenchConfig.extra``.
EXTRA_SCENARIOS = {"overload": "jobqueue.bench_overload", "schedules": "jobqueue.bench_schedules"}
PEERS = ("procrastinate", "pgqueuer")

#: Jobs for the bulk paths (COPY, enqueue_many, claim/drain, history).
JOBS = 50_000
QUICK_JOBS = 300
#: Jobs for the one-transaction-per-job paths (INSERT, enqueue).
SINGLE_JOBS = 10_000
QUICK_SINGLE_JOBS = 120
#: Rows per COPY / enqueue_many call (N is loaded in calls of this size, so that a run out
#: of time can stop between calls).
BULK_CHUNK = 10_000
CLAIM_BATCH = 100
HISTORY_ROWS = 1_000_000
QUICK_HISTORY_ROWS = 5_000
HISTORY_CHUNK = 100_000
LATENCY_RATES = (50, 500)
LATENCY_SECONDS = 10.0
QUICK_LATENCY_SECONDS = 1.0
#: Producer threads that share the paced enqueues of the latency scenario.
LATENCY_PRODUCERS = 4
#: How long a latency job may take to show up before it counts as missing.
LATENCY_GRACE_S = 10.0
#: Jobs per cost measurement (single paths, batched paths).
COST_SINGLE_JOBS = 2_000
COST_BATCH_JOBS = 10_000
QUICK_COST_SINGLE_JOBS = 60
QUICK_COST_BATCH_JOBS = 300
#: enqueue_many below jobqueue.client.COPY_THRESHOLD: one JSON array per call.
JSON_BATCH = 100
#: enqueue_many calls on one handle in the cost of its COPY path (>= COPY_THRESHOLD jobs each).
COPY_CALLS = 5
PRODUCER_PROCESSES = (1, 4)
DRAIN_PROCESSES = (1, 2)
#: Worker concurrency for the drain (jobs held at once; also the largest claim batch).
#: Measured on a 2-core machine: see docs/performance.md.
DRAIN_CONCURRENCY = 250
MAX_SECONDS = 120.0
#: A measurement always gets at least this long, even when the scenario budget is spent.
MIN_PHASE_S = 1.0
PROGRESS_POLL_S = 0.25
START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 30.0
QUIET_TIMEOUT_S = 15.0
PEER_TIMEOUT_S = 900.0
#: Tables printed to a file or a pipe get this many columns (rich assumes 80).
TABLE_WIDTH = 160

# -- the baseline: plain SQL on a plain table, no library ------------------------------------

BASELINE_DDL = """
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.job (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL DEFAULT 'default',
    type text NOT NULL,
    payload jsonb NOT NULL,
    priority smallint NOT NULL DEFAULT 5,
    run_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_claim_idx ON bench.job (queue, priority DESC, run_at, id);
CREATE UNLOGGED TABLE bench.latency (job_id bigint PRIMARY KEY, started double precision NOT NULL);
"""
BASELINE_COPY = "COPY bench.job (type, payload) FROM STDIN"
BASELINE_INSERT = (
    "WITH j AS (INSERT INTO bench.job (type, payload) VALUES (%s, %s) RETURNING id) "
    "SELECT id, pg_notify('bench', 'default') FROM j"
)
#: The claim the issue names: a CTE that locks with SKIP LOCKED, evaluated once.
BASELINE_CLAIM_CTE = """
WITH c AS (
    SELECT id FROM bench.job WHERE queue = 'default'
    ORDER BY priority DESC, run_at, id
    LIMIT %s FOR UPDATE SKIP LOCKED
)
DELETE FROM bench.job j USING c WHERE j.id = c.id RETURNING j.id, j.type, j.payload
"""
#: The same with id = ANY(ARRAY(...)), the other single-evaluation form (DESIGN.md).
BASELINE_CLAIM_ANY = """
DELETE FROM bench.job WHERE id = ANY(ARRAY(
    SELECT id FROM bench.job WHERE queue = 'default'
    ORDER BY priority DESC, run_at, id
    LIMIT %s FOR UPDATE SKIP LOCKED
)) RETURNING id, type, payload
"""
CLAIM_SQL = {"cte": BASELINE_CLAIM_CTE, "any": BASELINE_CLAIM_ANY}
NOOP_TYPE = "bench.noop"
#: Named on every enqueue, as the baseline names it in its rows.
QUEUE = "default"
LATENCY_TYPE = "bench.latency"

# -- what the bench reads from the server ---------------------------------------------------

COUNTERS = """
SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s) AS xacts,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid,
       pg_current_wal_lsn()::text AS lsn
"""
WAL_SINCE = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint"
FUNCTION_CALLS = "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'jobqueue'"
STATEMENT_CALLS = "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE dbid = %s AND toplevel"
#: Autovacuum's own transactions would count as the client's: off while costs are measured.
AUTOVACUUM_OFF = """
DO $$
DECLARE t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('jobqueue', 'bench') AND c.relkind IN ('r', 'm')
    LOOP
        EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off)', t);
    END LOOP;
END $$
"""
BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
LISTENING_WORKERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'jobqueue-listen:%%'"
)
LIVE_JOBS = "SELECT count(*) FROM jobqueue.job"
DRAINED = """
SELECT count(*) AS done,
       extract(epoch FROM max(finished_at) - min(claimed_at))::float8 AS seconds
FROM jobqueue.job_history WHERE state = 'completed' AND type = 'bench.noop'
"""
#: Finished jobs straight into the history (as its owner), finished within the last hour so
#: that no retention step prunes them during the run.
HISTORY_INSERT = """
INSERT INTO jobqueue.job_history
    (queue, type, payload, state, attempt, max_attempts, token, worker_id, created_at, claimed_at, finished_at)
SELECT 'default', 'bench.retained', jsonb_build_object('i', g), 'completed', 1, 3, g, 'bench',
       t - interval '2 seconds', t - interval '5 milliseconds', t
FROM generate_series(%s::bigint, %s::bigint) AS g,
     LATERAL (SELECT now() - (g %% 3000000) * interval '1 millisecond' AS t) AS f
"""


class BenchError(JobQueueError):
    """The benchmark could not run."""


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What to run and how big. ``validate()`` refuses nonsense, naming the field."""

    quick: bool = False
    only: tuple[str, ...] = SCENARIOS
    max_seconds: float = MAX_SECONDS
    jobs: int | None = None
    single_jobs: int | None = None
    drain_concurrency: tuple[int, ...] = (DRAIN_CONCURRENCY,)
    scratch_db: str | None = None
    keep: bool = False
    json_path: Path | None = None
    #: A Python with procrastinate and pgqueuer installed (make bench-peers); None: no peers.
    peers_python: str | None = None
    peers: tuple[str, ...] = PEERS
    progress: bool = True
    #: Options of the EXTRA_SCENARIOS (e.g. overload: duration_s, backlog_jobs, rate, factor).
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> BenchConfig:
        unknown = [name for name in self.only if name not in SCENARIOS and name not in EXTRA_SCENARIOS]
        if unknown or not self.only:
            raise BenchError(
                f"only: unknown scenario {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join((*SCENARIOS, *EXTRA_SCENARIOS))}"
            )
        if not 1 <= self.max_seconds <= 86_400:
            raise BenchError("max_seconds: must be between 1 and 86400")
        for name in ("jobs", "single_jobs"):
            value = getattr(self, name)
            if value is not None and not 10 <= value <= 10_000_000:
                raise BenchError(f"{name}: must be between 10 and 10000000")
        if not self.drain_concurrency or not all(1 <= c <= 10_000 for c in self.drain_concurrency):
            raise BenchError("drain_concurrency: each must be between 1 and 10000")
        unknown_peers = [p for p in self.peers if p not in PEERS]
        if unknown_peers:
            raise BenchError(f"peers: unknown peer {', '.join(unknown_peers)}; choose from {', '.join(PEERS)}")
        return self

    @property
    def n(self) -> int:
        return self.jobs or (QUICK_JOBS if self.quick else JOBS)

    @property
    def single_n(self) -> int:
        return self.single_jobs or (QUICK_SINGLE_JOBS if self.quick else SINGLE_JOBS)

    @property
    def history_rows(self) -> int:
        return QUICK_HISTORY_ROWS if self.quick else HISTORY_ROWS

    @property
    def latency_seconds(self) -> float:
        return QUICK_LATENCY_SECONDS if self.quick else LATENCY_SECONDS

    @property
    def cost_single_n(self) -> int:
        return QUICK_COST_SINGLE_JOBS if self.quick else COST_SINGLE_JOBS

    @property
    def cost_batch_n(self) -> int:
        return QUICK_COST_BATCH_JOBS if self.quick else COST_BATCH_JOBS

    @property
    def best_concurrency(self) -> int:
        return self.drain_concurrency[0]


# -- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One measurement: a rate (jobs per second) and whatever else it found."""

    scenario: str
    key: str
    label: str
    system: str
    processes: int
    jobs: int
    planned: int
    seconds: float
    rate: float
    partial: bool = False
    baseline: str | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measured:
    jobs: int
    seconds: float
    partial: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


#: jobqueue row -> the baseline row it is compared with, and the ratio the issue asks for.
RATIO_TARGETS: dict[str, float] = {
    "enqueue.many": 0.50,
    "enqueue.single.p1": 0.80,
    "drain.p1": 0.35,
    "history.retained": 0.90,
}
LATENCY_TARGETS_MS = {50: (3.0, 10.0)}  # rate -> (p50, p99)
COST_TARGET_XACTS = 3.0
PEER_TARGETS = {("drain.p1", "pgqueuer"): 5.0, ("drain.p1", "procrastinate"): 20.0}


class Budget:
    """A scenario's time budget, shared fairly among its remaining measurements."""

    def __init__(self, seconds: float, phases: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.left = max(phases, 1)

    def phase(self) -> float:
        """The monotonic deadline of the next measurement."""
        now = time.monotonic()
        share = max(self.deadline - now, 0.0) / max(self.left, 1)
        self.left = max(self.left - 1, 1)
        return now + max(share, MIN_PHASE_S)


# -- the scratch databases -------------------------------------------------------------------


def database_url(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + dbname))
    return make_conninfo(url, dbname=dbname)


def scratch_name(url: str, explicit: str | None = None) -> str:
    """``<database>_bench`` (at most 63 bytes), never the database the bench was pointed at."""
    params = conninfo_to_dict(url)
    current = str(params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE") or "postgres")
    name = explicit or f"{current[: 63 - len('_bench_template')]}_bench"
    if name == current:
        raise BenchError(f"scratch_db: {name} is the database the bench was pointed at; it would be dropped")
    if len(name.encode()) > 63 - len("_template"):
        raise BenchError(f"scratch_db: {name} is too long (at most 54 bytes)")
    return name


class Scratch:
    """The scratch database (and its migrated template) on the server the bench targets."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.admin_url = admin_url
        self.name = name
        self.template = f"{name}_template"
        self.url = database_url(admin_url, name)
        self.extra_databases: list[str] = []
        self.track_functions = False
        self.statements = False
        self.oid: int | None = None

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, application_name="jobqueue-bench")

    def connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        url = self.url if dbname is None else database_url(self.admin_url, dbname)
        return psycopg.connect(url, autocommit=True, application_name="jobqueue-bench")

    def create_template(self) -> None:
        from jobqueue import migrations

        with self.admin() as conn:
            for name in (self.name, self.template):
                _drop_database(conn, name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        migrations.upgrade(DatabaseTarget(database_url(self.admin_url, self.template), "bench template"))
        with self.connect(self.template) as conn:
            conn.execute("VACUUM ANALYZE")
            with contextlib.suppress(psycopg.Error):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT count(*) FROM pg_stat_statements")  # fails unless preloaded
                self.statements = True

    def reset(self) -> None:
        """A fresh scratch database, cloned from the migrated template (fresh statistics too)."""
        with self.admin() as conn:
            _drop_database(conn, self.name)
            _terminate(conn, self.template)
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(self.name), sql.Identifier(self.template)
                )
            )
            try:
                # Count calls of the SQL API functions per job (cost scenario). Superuser only.
                conn.execute(sql.SQL("ALTER DATABASE {} SET track_functions = 'all'").format(sql.Identifier(self.name)))
                self.track_functions = True
            except psycopg.Error:
                self.track_functions = False
            row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (self.name,)).fetchone()
            self.oid = int(row[0]) if row else None
        with self.connect() as conn:
            conn.execute(BASELINE_DDL)

    def fresh_database(self, name: str) -> str:
        """An empty database on the same server (for a peer); returns its URL."""
        with self.admin() as conn:
            _drop_database(conn, name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if name not in self.extra_databases:
            self.extra_databases.append(name)
        return database_url(self.admin_url, name)

    def drop_all(self) -> None:
        with self.admin() as conn:
            for name in (self.name, self.template, *self.extra_databases):
                _drop_database(conn, name)

    def wait_quiet(self, dbname: str | None = None) -> None:
        """Wait until no other session uses the database (their statistics are then flushed)."""
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        with self.admin() as conn:
            while time.monotonic() < deadline:
                row = conn.execute(BACKENDS, (dbname or self.name,)).fetchone()
                if row is None or row[0] == 0:
                    break
                time.sleep(0.05)
        time.sleep(0.15)  # a backend leaves pg_stat_activity just before it flushes its statistics


def _drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _terminate(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


# -- measuring in several processes ----------------------------------------------------------


def _child_insert(url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any) -> None:
    start, count = params["start"], params["count"]
    with psycopg.connect(url, autocommit=True, application_name="jobqueue-bench-baseline") as conn:
        cur = conn.cursor()
        ready.wait(START_TIMEOUT_S)
        for i in range(start, start + count):
            if stop.is_set():
                return
            cur.execute(BASELINE_INSERT, (NOOP_TYPE, json.dumps({"i": i})), prepare=True)
            counts[index] += 1


def _child_claim(url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any) -> None:
    claim = CLAIM_SQL[params["form"]]
    with psycopg.connect(url, autocommit=True, application_name="jobqueue-bench-baseline") as conn:
        cur = conn.cursor()
        ready.wait(START_TIMEOUT_S)
        while not stop.is_set():
            rows = cur.execute(claim, (CLAIM_BATCH,), prepare=True).fetchall()
            if not rows:
                return
            counts[index] += len(rows)


def _child_enqueue(url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any) -> None:
    from jobqueue.client import JobQueue

    start, count = params["start"], params["count"]
    with JobQueue(url, pool_size=1, application_name="jobqueue-bench-producer") as jq:
        jq.check_schema()  # connected before the clock starts
        ready.wait(START_TIMEOUT_S)
        for i in range(start, start + count):
            if stop.is_set():
                return
            jq.enqueue(NOOP_TYPE, {"i": i}, queue=QUEUE)
            counts[index] += 1


CHILDREN: dict[str, Callable[[str, int, dict[str, Any], Any, Any, Any], None]] = {
    "insert": _child_insert,
    "claim": _child_claim,
    "enqueue": _child_enqueue,
}


def _child_main(
    kind: str, url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any, ends: Any, errors: Any
) -> None:
    """Entry point of a measuring process (forked from the forkserver: nothing of the parent's state)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        CHILDREN[kind](url, index, params, ready, stop, counts)
    except BaseException as exc:
        errors.put(f"{kind} process {index}: {type(exc).__name__}: {exc}")
        ready.abort()
    finally:
        ends[index] = time.time()


def _mp() -> Any:
    """Processes forked from a fresh server process that has psycopg and jobqueue imported.

    Not ``fork`` (the bench has threads: progress bar, pools) and not ``spawn`` (every
    process would import everything again: about a second each on a busy 2-core machine).
    """
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["jobqueue.bench", "jobqueue.client"])
    return mp


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """(start, count) for each of ``parts`` shares of ``total``, as even as can be."""
    base, extra = divmod(total, parts)
    shares, start = [], 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        shares.append((start, count))
        start += count
    return shares


class Workers:
    """Real ``jobqueue worker`` processes, each logging to a temporary file (shown on failure)."""

    def __init__(self, commands: Sequence[list[str]]) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], Any]] = []
        self.stopped = False
        for command in commands:
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.procs.append((proc, log))

    def alive(self) -> bool:
        return any(proc.poll() is None for proc, _ in self.procs)

    def exited(self) -> bool:
        return any(proc.poll() is not None for proc, _ in self.procs)

    def terminate(self) -> None:
        """SIGTERM: the worker stops claiming, finishes what it holds, and exits."""
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def stop(self, graceful: bool = True) -> None:
        """Wait for every worker to exit (SIGTERM first when graceful); raise if one failed."""
        if self.stopped:
            return
        self.stopped = True
        if graceful:
            self.terminate()
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        for proc, _ in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        failure = None
        for proc, log in self.procs:
            if failure is None and proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                failure = f"worker exited with {proc.returncode}: {' | '.join(line.strip() for line in tail)}"
            log.close()
        if failure is not None:
            raise BenchError(failure)


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, target: DatabaseTarget, config: BenchConfig, progress: Any) -> None:
        self.target = target
        self.config = config
        self.scratch = Scratch(target.url, scratch_name(target.url, config.scratch_db))
        self.progress = progress
        self.rows: list[Row] = []
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._task: Any = None

    # -- progress -----------------------------------------------------------------------

    def _start(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
        self._task = self.progress.add_task(description, total=total, rate="")

    def _advance(self, completed: int, started: float | None = None) -> None:
        if self._task is None:
            return
        rate = ""
        if started is not None and completed:
            elapsed = time.monotonic() - started
            rate = f"{completed / elapsed:,.0f}/s" if elapsed > 0 else ""
        self.progress.update(self._task, completed=completed, rate=rate)

    def _done(self) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None

    # -- helpers ------------------------------------------------------------------------

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, key: str) -> Row | None:
        for row in self.rows:
            if row.key == key and row.system in ("jobqueue", "baseline"):
                return row
        return None

    def _row(self, scenario: str, key: str, label: str, system: str, processes: int, planned: int, m: Measured) -> Row:
        # The machine may be shared: keep its load with every figure.
        m.extra.setdefault("loadavg_1m", round(os.getloadavg()[0], 2))
        return self.add(
            Row(
                scenario=scenario,
                key=key,
                label=label,
                system=system,
                processes=processes,
                jobs=m.jobs,
                planned=planned,
                seconds=round(m.seconds, 4),
                rate=round(m.rate, 1),
                partial=m.partial,
                extra=m.extra,
            )
        )

    def _compare(self, row: Row, baseline_key: str) -> None:
        base = self.row(baseline_key)
        row.baseline = baseline_key
        if base is not None and base.rate > 0:
            row.ratio = round(row.rate / base.rate, 3)
        target = RATIO_TARGETS.get(row.key)
        if target is not None:
            row.target = f">= {target:.0%}"
            row.met = row.ratio is not None and row.ratio >= target

    def run_processes(
        self, kind: str, processes: int, planned: int, deadline: float, params: Sequence[dict[str, Any]]
    ) -> Measured:
        """Run ``processes`` processes of ``kind``; the clock starts once all are connected."""
        mp = _mp()
        ready = mp.Barrier(processes + 1)
        stop = mp.Event()
        counts = mp.RawArray("q", processes)
        ends = mp.RawArray("d", processes)
        errors = mp.Queue()
        procs = [
            mp.Process(
                target=_child_main,
                args=(kind, self.scratch.url, i, dict(params[i]), ready, stop, counts, ends, errors),
                daemon=True,
            )
            for i in range(processes)
        ]
        for proc in procs:
            proc.start()
        try:
            ready.wait(START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            stop.set()
            for proc in procs:
                proc.join(WORKER_STOP_TIMEOUT_S)
            raise BenchError(_first_error(errors) or f"{kind} processes did not start") from None
        started, t0 = time.monotonic(), time.time()
        partial = False
        while any(proc.is_alive() for proc in procs):
            self._advance(sum(counts), started)
            if time.monotonic() > deadline and not stop.is_set():
                stop.set()
                partial = True
            if procs[0].is_alive():
                procs[0].join(PROGRESS_POLL_S)
            else:
                time.sleep(PROGRESS_POLL_S / 5)
        for proc in procs:
            proc.join()
        error = _first_error(errors)
        if error:
            raise BenchError(error)
        done = sum(counts)
        self._advance(done, started)
        seconds = max(max(ends) - t0, 1e-6)
        return Measured(done, seconds, partial and done < planned)

    def _load_jobs(self, count: int, label: str = "loading jobs") -> None:
        """N no-op jobs into jobqueue, through enqueue_many (setup, not timed)."""
        from jobqueue.client import JobQueue

        self._start(label, count)
        with JobQueue(self.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
            done = 0
            for start, size in _chunks(count, BULK_CHUNK):
                jq.enqueue_many(noop_jobs(start, size))
                done += size
                self._advance(done)

    def _load_baseline(self, count: int) -> None:
        self._start("loading baseline rows", count)
        with self.scratch.connect() as conn:
            done = 0
            for start, size in _chunks(count, BULK_CHUNK):
                _copy_rows(conn, start, size)
                done += size
                self._advance(done)

    def _vacuum(self, *tables: str) -> None:
        with self.scratch.connect() as conn:
            for table in tables:
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.SQL(table)))

    # -- baseline -----------------------------------------------------------------------

    def baseline(self, budget_s: float) -> None:
        n, single = self.config.n, self.config.single_n
        budget = Budget(budget_s, 2 + len(PRODUCER_PROCESSES) + len(DRAIN_PROCESSES))
        self.scratch.reset()

        self._start(f"baseline: COPY {n:,} rows", n)
        m = self._copy(n, budget.phase())
        self._row("baseline", "baseline.copy", f"COPY {n:,} rows ({BULK_CHUNK:,} per COPY)", "baseline", 1, n, m)

        for procs in PRODUCER_PROCESSES:
            self._truncate_baseline()
            self._start(f"baseline: INSERT+NOTIFY per tx x{procs}", single)
            shares = [{"start": s, "count": c} for s, c in split(single, procs)]
            m = self.run_processes("insert", procs, single, budget.phase(), shares)
            self._row(
                "baseline", f"baseline.insert.p{procs}", "INSERT + NOTIFY, 1 tx/job", "baseline", procs, single, m
            )

        for procs in DRAIN_PROCESSES:
            self._claim_delete("cte", procs, n, budget.phase(), f"baseline.claim_delete.p{procs}")
        # The other single-evaluation claim form, for the schema's choice (DESIGN.md section 2).
        self._claim_delete("any", 1, n, budget.phase(), "baseline.claim_delete_any.p1")

    def _copy(self, n: int, deadline: float) -> Measured:
        started, done = time.monotonic(), 0
        with self.scratch.connect() as conn:
            for start, size in _chunks(n, BULK_CHUNK):
                if time.monotonic() > deadline:
                    break
                _copy_rows(conn, start, size)
                done += size
                self._advance(done, started)
        return Measured(done, time.monotonic() - started, done < n)

    def _truncate_baseline(self) -> None:
        with self.scratch.connect() as conn:
            conn.execute("TRUNCATE bench.job RESTART IDENTITY")

    def _claim_delete(
        self, form: str, procs: int, n: int, deadline: float, key: str, scenario: str = "baseline"
    ) -> None:
        self._truncate_baseline()
        self._load_baseline(n)
        self._vacuum("bench.job")
        what = "CTE" if form == "cte" else "ANY(ARRAY)"
        self._start(f"{scenario}: claim {CLAIM_BATCH} ({what}) + delete x{procs}", n)
        m = self.run_processes("claim", procs, n, deadline, [{"form": form}] * procs)
        label = f"claim {CLAIM_BATCH} SKIP LOCKED {what} + delete"
        self._row(scenario, key, label, "baseline", procs, n, m)

    # -- enqueue ------------------------------------------------------------------------

    def enqueue(self, budget_s: float) -> None:
        from jobqueue.client import JobQueue

        n, single = self.config.n, self.config.single_n
        budget = Budget(budget_s, 2 + 2 * len(PRODUCER_PROCESSES))
        self.scratch.reset()
        # Each jobqueue row is compared with the baseline measured just before it: on a
        # shared machine, rows measured minutes apart differ by more than the effect.
        self._start(f"enqueue: baseline COPY {n:,}", n)
        m = self._copy(n, budget.phase())
        self._row("enqueue", "enqueue.baseline.copy", "baseline COPY, just before", "baseline", 1, n, m)
        self._start(f"enqueue: enqueue_many {n:,}", n)
        deadline = budget.phase()
        with JobQueue(self.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
            jq.check_schema()
            started, done = time.monotonic(), 0
            for start, size in _chunks(n, BULK_CHUNK):
                if time.monotonic() > deadline:
                    break
                jq.enqueue_many(noop_jobs(start, size))
                done += size
                self._advance(done, started)
            m = Measured(done, time.monotonic() - started, done < n)
        row = self._row(
            "enqueue",
            "enqueue.many",
            f"enqueue_many {n:,} ({_path(min(n, BULK_CHUNK))}, {BULK_CHUNK:,}/call)",
            "jobqueue",
            1,
            n,
            m,
        )
        self._compare(row, "enqueue.baseline.copy")

        for procs in PRODUCER_PROCESSES:
            self.scratch.reset()
            self._start(f"enqueue: baseline INSERT+NOTIFY per tx x{procs}", single)
            shares = [{"start": s, "count": c} for s, c in split(single, procs)]
            m = self.run_processes("insert", procs, single, budget.phase(), shares)
            label = "baseline INSERT + NOTIFY, just before"
            self._row("enqueue", f"enqueue.baseline.insert.p{procs}", label, "baseline", procs, single, m)
            self._start(f"enqueue: enqueue() per tx x{procs}", single)
            m = self.run_processes("enqueue", procs, single, budget.phase(), shares)
            row = self._row("enqueue", f"enqueue.single.p{procs}", "enqueue(), 1 tx/job", "jobqueue", procs, single, m)
            self._compare(row, f"enqueue.baseline.insert.p{procs}")

    # -- drain --------------------------------------------------------------------------

    def drain(self, budget_s: float) -> None:
        n = self.config.n
        cases = [(p, c) for c in self.config.drain_concurrency for p in DRAIN_PROCESSES]
        budget = Budget(budget_s, len(cases) + len(DRAIN_PROCESSES))
        for procs, concurrency in cases:
            baseline = f"drain.baseline.p{procs}"
            if self.row(baseline) is None:  # the baseline just before the first drain of each count
                self.scratch.reset()
                self._claim_delete("cte", procs, n, budget.phase(), baseline, scenario="drain")
            m = self._drain(
                procs, concurrency, n, budget.phase(), f"drain: {n:,} jobs, {procs} worker(s) -c {concurrency}"
            )
            key = f"drain.p{procs}" if concurrency == self.config.best_concurrency else f"drain.p{procs}.c{concurrency}"
            row = self._row("drain", key, f"worker --burst -c {concurrency}", "jobqueue", procs, n, m)
            self._compare(row, baseline)

    def _worker_command(self, concurrency: int, burst: bool) -> list[str]:
        command = [sys.executable, "-m", "jobqueue", "--database-url", self.scratch.url, "worker"]
        command += ["--app", "jobqueue.bench_app:jq", "-c", str(concurrency), "--log-level", "WARNING"]
        return command + (["--burst"] if burst else [])

    def _spawn_workers(self, count: int, concurrency: int, burst: bool) -> Workers:
        return Workers([self._worker_command(concurrency, burst)] * count)

    def _drain(self, procs: int, concurrency: int, n: int, deadline: float, label: str, setup: Any = None) -> Measured:
        """Load N jobs, run ``procs`` burst workers until the queue is empty (or the deadline)."""
        self.scratch.reset()
        if setup is not None:
            setup()
        self._load_jobs(n)
        self._vacuum("jobqueue.job")
        self._start(label, n)
        started, t0 = time.monotonic(), time.time()
        workers = self._spawn_workers(procs, concurrency, burst=True)
        partial = False
        with self.scratch.connect() as conn:
            while workers.alive():
                left = int(conn.execute(LIVE_JOBS).fetchone()[0])  # type: ignore[index]
                self._advance(n - left, started)
                if time.monotonic() > deadline and not partial:
                    partial = True
                    workers.terminate()
                time.sleep(PROGRESS_POLL_S * 2)
            wall = time.time() - t0
            workers.stop(graceful=False)
            row = conn.execute(DRAINED).fetchone()
        assert row is not None
        done, db_seconds = int(row[0]), row[1]
        self._advance(done, started)
        seconds = float(db_seconds) if db_seconds and db_seconds > 0 else wall
        return Measured(
            done,
            seconds,
            partial and done < n,
            extra={
                "concurrency": concurrency,
                "wall_seconds": round(wall, 3),
                "wall_rate": round(done / wall, 1) if wall > 0 else None,
                "clock": "first claimed_at to last finished_at (database clock)",
            },
        )

    # -- latency ------------------------------------------------------------------------

    def latency(self, budget_s: float) -> None:
        from jobqueue.client import JobQueue
        from jobqueue.worker import CONCURRENCY

        seconds = self.config.latency_seconds
        budget = Budget(budget_s, len(LATENCY_RATES))
        self.scratch.reset()
        self._start("latency: starting an idle worker", None)
        workers = self._spawn_workers(1, CONCURRENCY, burst=False)
        try:
            with JobQueue(self.scratch.url, pool_size=LATENCY_PRODUCERS, application_name="jobqueue-bench") as jq:
                self._wait_listening(workers)
                with contextlib.ExitStack() as stack:  # open every producer connection before the clock
                    for _ in range(LATENCY_PRODUCERS):
                        stack.enter_context(jq.pool.connection())
                warm = [jq.enqueue(LATENCY_TYPE, {"i": -i}, queue=QUEUE) for i in range(1, 4)]
                self._wait_recorded(warm, time.monotonic() + START_TIMEOUT_S)
                time.sleep(0.5)
                for rate in LATENCY_RATES:
                    count = max(int(rate * seconds), 1)
                    self._start(f"latency: {rate}/s for {seconds:g} s", count)
                    deadline = budget.phase()
                    sent, elapsed = self._paced(jq, rate, count, deadline)
                    started = self._wait_recorded([i for i, _ in sent], time.monotonic() + LATENCY_GRACE_S)
                    latencies = sorted((started[i] - t) * 1000 for i, t in sent if i in started)
                    m = Measured(len(sent), elapsed, len(sent) < count, extra=_percentiles(latencies))
                    m.extra.update(rate_asked=rate, missing=len(sent) - len(latencies), worker_concurrency=CONCURRENCY)
                    row = self._row(
                        "latency", f"latency.{rate}", f"enqueue at {rate}/s -> handler start", "jobqueue", 1, count, m
                    )
                    _latency_target(row)
                    time.sleep(0.5)
        finally:
            workers.stop()

    def _wait_listening(self, workers: Workers) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.scratch.admin() as conn:
            while time.monotonic() < deadline:
                if workers.exited():
                    workers.stop(graceful=False)
                row = conn.execute(LISTENING_WORKERS, (self.scratch.name,)).fetchone()
                if row and row[0] >= len(workers.procs):
                    return
                time.sleep(0.05)
        raise BenchError("the latency worker did not start listening within 60 s")

    def _paced(self, jq: Any, rate: float, count: int, deadline: float) -> tuple[list[tuple[int, float]], float]:
        """Enqueue ``count`` jobs at ``rate`` per second, one transaction each; (id, commit time)."""
        sent: list[tuple[int, float]] = []
        lock = threading.Lock()
        errors: list[BaseException] = []
        t0 = time.monotonic() + 0.05

        def produce(k: int) -> None:
            try:
                for i in range(k, count, LATENCY_PRODUCERS):
                    due = t0 + i / rate
                    if due > deadline:
                        return
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    job_id = jq.enqueue(LATENCY_TYPE, {"i": i}, queue=QUEUE)
                    committed = time.time()  # right after the commit returned
                    with lock:
                        sent.append((job_id, committed))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(LATENCY_PRODUCERS)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            self._advance(len(sent))
            threads[0].join(PROGRESS_POLL_S)
        for thread in threads:
            thread.join()
        if errors:
            raise BenchError(f"latency producer: {errors[0]}")
        elapsed = max(time.monotonic() - t0, 1e-6)
        return sent, elapsed

    def _wait_recorded(self, ids: Sequence[int], deadline: float) -> dict[int, float]:
        found: dict[int, float] = {}
        with self.scratch.connect() as conn:
            while True:
                rows = conn.execute("SELECT job_id, started FROM bench.latency WHERE job_id = ANY(%s)", (list(ids),))
                found = {int(r[0]): float(r[1]) for r in rows.fetchall()}
                if len(found) >= len(ids) or time.monotonic() > deadline:
                    return found
                time.sleep(0.1)

    # -- history ------------------------------------------------------------------------

    def history(self, budget_s: float) -> None:
        n, retained = self.config.n, self.config.history_rows
        concurrency = self.config.best_concurrency
        budget = Budget(budget_s, 2)
        m = self._drain(1, concurrency, n, budget.phase(), f"history: drain {n:,}, no finished jobs retained")
        m.extra["retained"] = 0
        self._row("history", "history.empty", "drain, 0 finished jobs retained", "jobqueue", 1, n, m)

        def fill() -> None:
            self._start(f"history: inserting {retained:,} finished jobs", retained)
            with self.scratch.connect() as conn:
                for start, size in _chunks(retained, HISTORY_CHUNK):
                    conn.execute(HISTORY_INSERT, (start + 1, start + size))
                    self._advance(start + size)
                conn.execute("VACUUM ANALYZE jobqueue.job_history")

        label = f"history: drain {n:,}, {retained:,} finished jobs retained"
        m = self._drain(1, concurrency, n, budget.phase(), label, setup=fill)
        m.extra["retained"] = retained
        row = self._row(
            "history", "history.retained", f"drain, {retained:,} finished jobs retained", "jobqueue", 1, n, m
        )
        self._compare(row, "history.empty")

    # -- cost ---------------------------------------------------------------------------

    def cost(self, budget_s: float) -> None:
        from jobqueue.client import JobQueue

        single, batch = self.config.cost_single_n, self.config.cost_batch_n
        budget = Budget(budget_s, 6)
        concurrency = self.config.best_concurrency

        def measure(key: str, label: str, system: str, jobs: int, per: int, run: Callable[[], Measured]) -> None:
            self.scratch.wait_quiet()
            calls_before = self._function_calls()
            statements_before = self._statements()
            self.scratch.wait_quiet()
            before = self._counters()
            m = run()
            self.scratch.wait_quiet()
            m.extra.update(self._cost_deltas(before, calls_before, statements_before, m.jobs, per))
            m.extra["jobs_per_batch"] = per
            self._row("cost", key, label, system, 1, jobs, m)

        def insert_one() -> Measured:
            shares = [{"start": 0, "count": single}]
            return self.run_processes("insert", 1, single, budget.phase(), shares)

        def enqueue_one() -> Measured:
            shares = [{"start": 0, "count": single}]
            return self.run_processes("enqueue", 1, single, budget.phase(), shares)

        def copy_batch() -> Measured:
            return self._copy(batch, budget.phase())

        # Several calls on one handle, so that what a session pays once (connecting, dropping
        # the temporary table at exit) is spread as in a long-lived producer.
        copy_size = max(COPY_THRESHOLD, batch // COPY_CALLS)

        def enqueue_copy() -> Measured:
            started = time.monotonic()
            with JobQueue(self.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
                for k in range(COPY_CALLS):
                    jq.enqueue_many(noop_jobs(k * copy_size, copy_size))
            return Measured(copy_size * COPY_CALLS, time.monotonic() - started, False)

        def enqueue_json() -> Measured:
            started, done = time.monotonic(), 0
            with JobQueue(self.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
                for start, size in _chunks(batch, JSON_BATCH):
                    jq.enqueue_many(noop_jobs(start, size))
                    done += size
            return Measured(done, time.monotonic() - started, False)

        def claim_delete() -> Measured:
            return self.run_processes("claim", 1, batch, budget.phase(), [{"form": "cte"}])

        self.scratch.reset()
        self._autovacuum_off()
        self._start(f"cost: INSERT+NOTIFY x{single:,}", single)
        measure("cost.baseline.insert", "baseline INSERT + NOTIFY, 1 tx/job", "baseline", single, 1, insert_one)
        self._start(f"cost: enqueue() x{single:,}", single)
        measure("cost.enqueue.single", "enqueue(), 1 tx/job", "jobqueue", single, 1, enqueue_one)
        self._truncate_baseline()
        self._start(f"cost: COPY {batch:,}", batch)
        measure("cost.baseline.copy", f"baseline COPY {batch:,}", "baseline", batch, batch, copy_batch)
        self._start(f"cost: enqueue_many {COPY_CALLS} x {copy_size:,} (COPY)", None)
        label = f"enqueue_many {COPY_CALLS} calls x {copy_size:,} (COPY path)"
        total = COPY_CALLS * copy_size
        measure("cost.enqueue.many", label, "jobqueue", total, copy_size, enqueue_copy)
        self._start(f"cost: enqueue_many x{JSON_BATCH} (JSON)", None)
        measure(
            "cost.enqueue.many_json",
            f"enqueue_many {JSON_BATCH}/call (JSON path)",
            "jobqueue",
            batch,
            JSON_BATCH,
            enqueue_json,
        )
        self._truncate_baseline()
        self._load_baseline(batch)
        self._vacuum("bench.job")
        self._start(f"cost: claim {CLAIM_BATCH} + delete", batch)
        label = f"baseline claim {CLAIM_BATCH} + delete"
        measure("cost.baseline.claim_delete", label, "baseline", batch, CLAIM_BATCH, claim_delete)

        # The drain: loading the jobs is setup, so it runs before the counters are read.
        self.scratch.reset()
        self._autovacuum_off()
        self._load_jobs(batch)
        self._vacuum("jobqueue.job")
        label = f"worker drain -c {concurrency} (claim + complete_many)"
        measure(
            "cost.drain",
            label,
            "jobqueue",
            batch,
            concurrency,
            lambda: self._drain_loaded(concurrency, batch, budget.phase()),
        )

    def _autovacuum_off(self) -> None:
        with self.scratch.connect() as conn:
            conn.execute(AUTOVACUUM_OFF)

    def _drain_loaded(self, concurrency: int, n: int, deadline: float) -> Measured:
        self._start(f"cost: worker drain {n:,}", n)
        started = time.monotonic()
        workers = self._spawn_workers(1, concurrency, burst=True)
        partial = False
        while workers.alive():
            if time.monotonic() > deadline and not partial:
                partial = True
                workers.terminate()
            time.sleep(PROGRESS_POLL_S)
        workers.stop(graceful=False)
        with self.scratch.connect() as conn:
            row = conn.execute(DRAINED).fetchone()
        assert row is not None
        done = int(row[0])
        self._advance(done, started)
        return Measured(done, float(row[1] or time.monotonic() - started), partial and done < n)

    def _counters(self) -> dict[str, Any]:
        with self.scratch.admin() as conn:
            row = conn.execute(COUNTERS, (self.scratch.name,)).fetchone()
        assert row is not None
        return {"xacts": int(row[0] or 0), "next_xid": int(row[1]), "lsn": str(row[2])}

    def _function_calls(self) -> dict[str, int]:
        if not self.scratch.track_functions:
            return {}
        with self.scratch.connect() as conn:
            return {str(name): int(calls) for name, calls in conn.execute(FUNCTION_CALLS).fetchall()}

    def _statements(self) -> int | None:
        if not self.scratch.statements:
            return None
        with self.scratch.connect() as conn:
            row = conn.execute(STATEMENT_CALLS, (self.scratch.oid,)).fetchone()
        return int(row[0]) if row else None

    def _cost_deltas(
        self, before: dict[str, Any], calls_before: dict[str, int], statements_before: int | None, jobs: int, per: int
    ) -> dict[str, Any]:
        with self.scratch.admin() as conn:
            row = conn.execute(COUNTERS, (self.scratch.name,)).fetchone()
            wal = conn.execute(WAL_SINCE, (before["lsn"],)).fetchone()
        assert row is not None and wal is not None
        xacts = int(row[0] or 0) - before["xacts"]
        xids = int(row[1]) - before["next_xid"]
        jobs = max(jobs, 1)
        batches = max(jobs / per, 1)
        out: dict[str, Any] = {
            "xacts": xacts,
            "xacts_per_job": round(xacts / jobs, 3),
            "xacts_per_batch": round(xacts / batches, 2),
            "xids": xids,
            "xids_per_job": round(xids / jobs, 3),
            "wal_bytes": int(wal[0]),
            "wal_bytes_per_job": round(int(wal[0]) / jobs, 1),
        }
        calls_after = self._function_calls()
        if calls_after:
            deltas = {k: v - calls_before.get(k, 0) for k, v in calls_after.items() if v - calls_before.get(k, 0) > 0}
            api = sum(v for k, v in deltas.items() if not k.startswith("_"))
            out["function_calls"] = deltas
            out["api_calls_per_job"] = round(api / jobs, 3)
        statements = self._statements()
        if statements is not None and statements_before is not None:
            # The two reads of pg_stat_statements itself are in the count; take them out.
            out["statements_per_job"] = round((statements - statements_before - 2) / jobs, 3)
        return out

    # -- peers --------------------------------------------------------------------------

    def peers(self, scenario: str, budget_s: float) -> None:
        python = self.config.peers_python
        if python is None:
            return
        directory = peers_dir()
        n, single = self.config.n, self.config.single_n
        for peer in self.config.peers:
            script = directory / f"{peer}_driver.py"
            cases: list[tuple[str, str, int, dict[str, Any]]] = []
            if scenario == "enqueue":
                cases = [("enqueue.many", "enqueue-many", n, {"jobs": n, "chunk": BULK_CHUNK})]
                cases += [
                    (f"enqueue.single.p{p}", "enqueue-single", single, {"jobs": single, "processes": p})
                    for p in PRODUCER_PROCESSES
                ]
            elif scenario == "drain":
                cases = [(f"drain.p{p}", "drain", n, {"jobs": n, "processes": p}) for p in DRAIN_PROCESSES]
            elif scenario == "latency":
                seconds = self.config.latency_seconds
                cases = [
                    (f"latency.{r}", "latency", max(int(r * seconds), 1), {"rate": r, "seconds": seconds})
                    for r in LATENCY_RATES
                ]
            budget = Budget(budget_s, len(cases))
            for key, command, planned, options in cases:
                self._start(f"{scenario}: {peer} {command} {_options_text(options)}", None)
                url = self.scratch.fresh_database(f"{self.scratch.name}_{peer}")
                max_seconds = max(budget.phase() - time.monotonic(), MIN_PHASE_S)
                result = run_peer(python, script, command, url, max_seconds, options)
                mine = self.row(key)
                m = Measured(int(result["jobs"]), float(result["seconds"]), bool(result.get("partial")))
                m.extra = {k: v for k, v in result.items() if k not in ("jobs", "seconds", "partial")}
                row = self._row(
                    scenario, key, mine.label if mine else key, peer, options.get("processes", 1), planned, m
                )
                if mine is not None and row.rate > 0:
                    row.baseline = key
                    row.ratio = round(mine.rate / row.rate, 3)  # jobqueue / peer
                target = PEER_TARGETS.get((key, peer))
                if target is not None:
                    row.target = f"jobqueue >= {target:g}x"
                    row.met = row.ratio is not None and row.ratio >= target
                with self.scratch.admin() as conn:
                    _drop_database(conn, f"{self.scratch.name}_{peer}")


def peers_dir() -> Path:
    """``bench/peers`` of the checkout this package runs from."""
    directory = Path(__file__).resolve().parent.parent / "bench" / "peers"
    if not directory.is_dir():
        raise BenchError("peers: bench/peers/ is not here; run the peer comparison from a jobqueue checkout")
    return directory


def run_peer(python: str, script: Path, command: str, url: str, max_seconds: float, options: dict[str, Any]) -> Any:
    """Run one peer driver command; its last stdout line is a JSON object."""
    args = [python, str(script), command, "--url", url, "--max-seconds", f"{max_seconds:.1f}"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=PEER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{script.stem} {command}: no answer within {PEER_TIMEOUT_S:g} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BenchError(f"{script.stem} {command} exited with {done.returncode}: {tail}")
    return json.loads(lines[-1])


def _options_text(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def _path(size: int) -> str:
    return "COPY path" if size >= COPY_THRESHOLD else "JSON path"


def noop_jobs(start: int, count: int) -> list[dict[str, Any]]:
    return [{"type": NOOP_TYPE, "payload": {"i": i}, "queue": QUEUE} for i in range(start, start + count)]


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)


def _copy_rows(conn: psycopg.Connection[Any], start: int, size: int) -> None:
    with conn.transaction(), conn.cursor().copy(BASELINE_COPY) as copy:
        for i in range(start, start + size):
            copy.write_row((NOOP_TYPE, json.dumps({"i": i})))


def _first_error(errors: Any) -> str | None:
    """The first error a measuring process reported (they are flushed before it exits)."""
    try:
        return str(errors.get(timeout=0.05))
    except Exception:
        return None


def _percentiles(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}

    def pct(p: float) -> float:
        index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
        return round(values[index], 2)

    return {
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(values[-1], 2),
        "mean_ms": round(statistics.fmean(values), 2),
        "samples": len(values),
    }


def _latency_target(row: Row) -> None:
    rate = int(row.extra.get("rate_asked") or 0)
    limits = LATENCY_TARGETS_MS.get(rate)
    if limits is None:
        return
    p50, p99 = row.extra.get("p50_ms"), row.extra.get("p99_ms")
    row.target = f"p50 <= {limits[0]:g} ms, p99 <= {limits[1]:g} ms"
    row.met = p50 is not None and p99 is not None and p50 <= limits[0] and p99 <= limits[1]


# -- output ----------------------------------------------------------------------------------


def server_info(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'shared_preload_libraries')"
            ).fetchall()
        )
    return {"version": version[0] if version else None, "settings": settings}


def report(bench: Bench, started: datetime, server: dict[str, Any]) -> dict[str, Any]:
    config = bench.config
    scenarios: dict[str, Any] = {}
    for name in config.only:
        rows = [asdict(r) for r in bench.rows if r.scenario == name]
        scenarios[name] = {"rows": rows, "seconds": bench.timings.get(name), "error": bench.errors.get(name)}
    return {
        "version": 1,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "rates are noisy on a shared machine; ratios are measured in the same run",
        },
        "server": {"url": redact(bench.target.url), "scratch_database": bench.scratch.name, **server},
        "counting": {
            "transactions": "pg_stat_database.xact_commit + xact_rollback deltas of the scratch database "
            "(every transaction, read-only and empty ones too); xids: pg_snapshot_xmax(pg_current_snapshot()) "
            "deltas (write transactions, server-wide)",
            "wal": "pg_current_wal_lsn() deltas (server-wide)",
            "statements": "pg_stat_statements calls"
            if bench.scratch.statements
            else "pg_stat_statements is not loadable (not in shared_preload_libraries): calls of the jobqueue "
            "SQL functions from pg_stat_user_functions (track_functions = all on the scratch database) instead",
        },
        "config": {
            "quick": config.quick,
            "jobs": config.n,
            "single_jobs": config.single_n,
            "max_seconds": config.max_seconds,
            "drain_concurrency": list(config.drain_concurrency),
            "history_rows": config.history_rows,
            "latency_seconds": config.latency_seconds,
            "peers": list(config.peers) if config.peers_python else [],
        },
        "scenarios": scenarios,
    }


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    return f"{row.ratio:.0%}" if row.system == "jobqueue" else f"{row.ratio:.2f}x"


def _fmt_target(row: Row) -> str:
    if row.target is None:
        return ""
    mark = "[green]met[/]" if row.met else "[red]missed[/]"
    return f"{row.target} {mark}"


def print_tables(bench: Bench, console: Any) -> None:
    from rich.table import Table

    rows = [r for r in bench.rows if r.system in ("baseline", "jobqueue")]
    throughput = [r for r in rows if r.scenario in ("baseline", "enqueue", "drain", "history")]
    if throughput:
        table = Table(title="Throughput (jobs/s; ratio = jobqueue / baseline row, same run)", title_justify="left")
        for heading in ("scenario", "case", "procs", "jobs", "seconds", "jobs/s", "vs", "ratio", "target"):
            table.add_column(
                heading, justify="right" if heading in ("procs", "jobs", "seconds", "jobs/s", "ratio") else "left"
            )
        for r in throughput:
            partial = " [yellow](partial)[/]" if r.partial else ""
            table.add_row(
                r.scenario,
                r.label + partial,
                str(r.processes),
                f"{r.jobs:,}",
                f"{r.seconds:.2f}",
                _fmt_rate(r.rate),
                r.baseline or "",
                _fmt_ratio(r),
                _fmt_target(r),
            )
        console.print(table)
    latency = [r for r in rows if r.scenario == "latency"]
    if latency:
        table = Table(title="Wake-up latency: enqueue commit -> handler start (ms)", title_justify="left")
        for heading in ("rate asked", "sent", "achieved/s", "p50", "p95", "p99", "max", "missing", "target"):
            table.add_column(heading, justify="left" if heading == "target" else "right")
        for r in latency:
            e = r.extra
            table.add_row(
                f"{e.get('rate_asked')}/s",
                f"{r.jobs:,}",
                _fmt_rate(r.rate),
                *(str(e.get(k, "-")) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "missing")),
                _fmt_target(r),
            )
        console.print(table)
    cost = [r for r in rows if r.scenario == "cost"]
    if cost:
        statements = "stmts/job" if bench.scratch.statements else "API calls/job"
        table = Table(
            title="Cost per job (xacts: pg_stat_database of the scratch db; xids, WAL: server-wide)",
            title_justify="left",
        )
        for heading in ("path", "jobs", "jobs/batch", "xacts/job", "xacts/batch", "xids/job", "WAL B/job", statements):
            table.add_column(heading, justify="left" if heading == "path" else "right")
        for r in cost:
            e = r.extra
            table.add_row(
                f"{r.system}: {r.label}",
                f"{r.jobs:,}",
                f"{e.get('jobs_per_batch', '-'):,}",
                str(e.get("xacts_per_job", "-")),
                str(e.get("xacts_per_batch", "-")),
                str(e.get("xids_per_job", "-")),
                f"{e.get('wal_bytes_per_job', 0):,.0f}",
                str(e.get("statements_per_job", e.get("api_calls_per_job", "-"))),
            )
        console.print(table)
    peer_rows = [r for r in bench.rows if r.system in PEERS]
    if peer_rows:
        peers = [p for p in PEERS if any(r.system == p for r in peer_rows)]
        table = Table(title="Peers, same server, same run (ratio = jobqueue / peer)", title_justify="left")
        table.add_column("row")
        table.add_column("procs", justify="right")
        table.add_column("jobqueue", justify="right")
        for peer in peers:
            table.add_column(peer, justify="right")
        for peer in peers:
            table.add_column(f"jq / {peer}", justify="right")
        table.add_column("target")
        keys = list(dict.fromkeys(r.key for r in peer_rows))
        for key in keys:
            mine = bench.row(key)
            theirs = {r.system: r for r in peer_rows if r.key == key}
            if key.startswith("latency."):
                cells = [_latency_cell(mine)] + [_latency_cell(theirs.get(p)) for p in peers]
                ratios = ["-" for _ in peers]
            else:
                cells = [_fmt_rate(mine.rate if mine else None)] + [
                    _fmt_rate(theirs[p].rate if p in theirs else None) for p in peers
                ]
                ratios = [f"{theirs[p].ratio:.2f}x" if p in theirs and theirs[p].ratio else "-" for p in peers]
            targets = "; ".join(f"{p}: {_fmt_target(theirs[p])}" for p in peers if p in theirs and theirs[p].target)
            cut = [p for p in peers if p in theirs and theirs[p].partial]
            note = f" [yellow](partial: {', '.join(cut)})[/]" if cut else ""
            any_row = next(iter(theirs.values()))
            table.add_row(key + note, str(any_row.processes), *cells, *ratios, targets)
        console.print(table)
        console.print("latency cells: p50 / p99 ms; throughput cells: jobs/s")
    bench_schedules.print_table(bench, console)
    for name, error in bench.errors.items():
        console.print(f"[red]{name}: failed: {error}[/]")


def _latency_cell(row: Row | None) -> str:
    if row is None:
        return "-"
    return f"{row.extra.get('p50_ms', '-')} / {row.extra.get('p99_ms', '-')}"


def run(target: DatabaseTarget, config: BenchConfig) -> int:
    """Run the selected scenarios; print the tables; write JSON. Returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    config = config.validate()
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=max(out.width, TABLE_WIDTH))
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    started = datetime.now(UTC)
    server = server_info(target.url)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        disable=not config.progress,
        transient=True,
    )
    bench = Bench(target, config, progress)
    err.print(
        f"bench: {redact(target.url)} (PostgreSQL {server['version']}), scratch database {bench.scratch.name}, "
        f"{os.cpu_count()} CPUs; each scenario stops after {config.max_seconds:g} s"
    )
    steps: dict[str, Callable[[float], None]] = {
        "baseline": bench.baseline,
        "enqueue": bench.enqueue,
        "drain": bench.drain,
        "latency": bench.latency,
        "history": bench.history,
        "cost": bench.cost,
    }
    for name in config.only:
        if name in EXTRA_SCENARIOS:
            import importlib

            steps[name] = functools.partial(importlib.import_module(EXTRA_SCENARIOS[name]).run_scenario, bench)
    try:
        with progress:
            bench._start("creating the scratch database", None)
            bench.scratch.create_template()
            for name in config.only:
                began = time.monotonic()
                try:
                    steps[name](config.max_seconds)
                    if config.peers_python and name in PEER_SCENARIOS:
                        bench.peers(name, config.max_seconds)
                except (JobQueueError, psycopg.Error, OSError) as exc:
                    bench.errors[name] = " ".join(str(exc).split()) or type(exc).__name__
                except Exception as exc:  # a bug here: say where, and go on with the next scenario
                    err.print_exception()
                    bench.errors[name] = f"{type(exc).__name__}: {exc}"
                finally:
                    bench._done()
                bench.timings[name] = round(time.monotonic() - began, 2)
    finally:
        if not config.keep:
            with contextlib.suppress(psycopg.Error):
                bench.scratch.drop_all()
    print_tables(bench, out)
    document = report(bench, started, server)
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        err.print(f"bench: results written to {config.json_path}")
    return 1 if bench.errors else 0


def parse_only(text: str | None) -> tuple[str, ...]:
    if not text:
        return SCENARIOS
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def parse_ints(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if not text:
        return default
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise BenchError(f"drain_concurrency: {text!r} is not a comma-separated list of numbers") from exc


__all__ = ["BenchConfig", "BenchError", "parse_ints", "parse_only", "run"]
