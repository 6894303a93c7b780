"""Worker subprocesses, the ledgers and the end-of-test invariants (RELIABILITY.md section 4.2).

Ledgers (tables in the test's own database, see LEDGER_DDL):

* ``exec_ledger``     one row per execution, written by the handler (tests/chaos/chaos_app.py)
                      on its own autocommit connection *before* its side effect;
* ``accept_ledger``   one row per accepted completion, ``job_id`` UNIQUE: a second accepted
                      token for a job fails loudly when it is loaded. The worker has no hook
                      after an accepted completion, so the rows come from what the worker
                      itself was told: its JSON log records ``job_completed`` /
                      ``job_already_completed`` with the job id and token, written only after
                      ``complete_many`` returned that status. (The database's side of the same
                      fact, ``jobqueue.job_event``, is checked separately: both must agree.)
* ``enqueue_ledger``  the ids producers were acknowledged (enqueue returned them).
* ``step_ledger``     side-effect steps of the ``chaos.steps`` handler (CHAOS-05).

``check_invariants`` is the end-of-test invariant query; ``Feeder`` keeps a steady backlog
and ``rate`` turns ``job_event`` completions into throughput over a window of database time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from jobqueue import JobQueue
from tests.support.sql_api import events_by_job

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.chaos.chaos_app:jq"
#: quick (the default, part of `make test`) or full (`make chaos`).
SCALE = os.environ.get("CHAOS_SCALE", "quick").strip().lower() or "quick"
if SCALE not in ("quick", "full"):
    raise RuntimeError(f"CHAOS_SCALE: must be quick or full, not {SCALE!r}")
#: Retry at once after a lost lease, so that re-claim delays measure the queue, not a policy.
NO_BACKOFF = {"strategy": "fixed", "initial_delay": 0, "jitter": 0}


def scaled(quick: Any, full: Any) -> Any:
    return full if SCALE == "full" else quick


def tier_targets(every_tier: dict[str, bool], full_tier: dict[str, bool] | None = None) -> dict[str, bool]:
    """The targets of this tier's figure table; a NOT MET fails the test (conftest.Figures).

    ``full_tier`` holds the throughput shares: the quick tier's windows (3 s) are too short
    to measure them, so there they are printed as figures, not targets (docs/guarantees.md).
    """
    if SCALE == "full" and full_tier:
        return {**every_tier, **full_tier}
    return dict(every_tier)


LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS exec_ledger (
    job_id bigint NOT NULL,
    token bigint NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS accept_ledger (
    job_id bigint NOT NULL UNIQUE,
    token bigint NOT NULL,
    worker text NOT NULL
);
CREATE TABLE IF NOT EXISTS enqueue_ledger (
    job_id bigint PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS step_ledger (
    job_id bigint NOT NULL,
    token bigint NOT NULL,
    pid int NOT NULL,
    step int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

#: Transitions a job may make, from docs/sql-api.md "States" (None: created).
VALID_TRANSITIONS = {
    (None, "pending"),
    ("pending", "processing"),
    ("retrying", "processing"),
    ("processing", "completed"),
    ("processing", "retrying"),
    ("processing", "dead_letter"),
    ("processing", "cancelled"),
    ("processing", "pending"),
    ("pending", "dead_letter"),
    ("retrying", "dead_letter"),
    ("pending", "cancelled"),
    ("retrying", "cancelled"),
    ("dead_letter", "archived"),
    ("dead_letter", "pending"),
    ("archived", "pending"),
}


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=5)


def install_ledgers(url: str) -> None:
    with connect(url) as conn:
        conn.execute(LEDGER_DDL)


@dataclass
class Workers:
    """Starts `jobqueue worker` processes against one database; kills them all at the end.

    Each logs JSON at DEBUG to its own file (the accept ledger is read from it).
    """

    url: str
    log_dir: Path
    ledger_url: str | None = None
    #: The --app the workers load (the soak and OPS tests use tests.support.soak_app:jq).
    app: str = APP
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    started: int = 0

    def start(
        self,
        *args: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
        launcher: Iterable[str] = ("-m", "jobqueue"),
        url: str | None = None,
    ) -> subprocess.Popen[str]:
        self.started += 1
        name = name or f"w{self.started}"
        path = self.log_dir / f"{name}.log"
        log = open(path, "w")  # noqa: SIM115 - closed by kill_all
        self.logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                *launcher,
                "--database-url",
                url or self.url,
                "worker",
                "--app",
                self.app,
                "--name",
                name,
                "--log-format",
                "json",
                "--log-level",
                "DEBUG",
                *args,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={
                **os.environ,
                "LEDGER_URL": self.ledger_url or self.url,
                "PGAPPNAME": f"jq-worker-{name}",
                **(env or {}),
            },
        )
        proc.log_path = path  # type: ignore[attr-defined]
        proc.worker_name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
            else:
                # The process is gone; its session may still hold children (none expected).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for log in self.logs:
            log.close()

    def log_paths(self) -> list[Path]:
        return [Path(p.log_path) for p in self.procs]  # type: ignore[attr-defined]


def log_of(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def log_records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a worker log (a line cut short by SIGKILL, or a non-JSON line, is skipped)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def scalar(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def db_now(url: str) -> datetime:
    """The database's clock (every window is measured in database time)."""
    with connect(url) as conn:
        return scalar(conn, "SELECT clock_timestamp()")  # type: ignore[no-any-return]


def state_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT state::text AS state, count(*) AS n FROM jobqueue.jobs GROUP BY 1").fetchall()
    return {row["state"]: int(row["n"]) for row in rows}


def work_jobs(n: int, *, seed: int = 0, sleep_ms: tuple[int, int] = (0, 20), **options: Any) -> list[dict[str, Any]]:
    import random

    rng = random.Random(seed)
    return [
        {
            "type": "chaos.work",
            "payload": {"n": i, "sleep_ms": rng.randint(*sleep_ms)},
            "retry_policy": NO_BACKOFF,
            **options,
        }
        for i in range(n)
    ]


def enqueue(url: str, jobs: list[dict[str, Any]]) -> list[int]:
    """Enqueue and write the acknowledged ids to enqueue_ledger."""
    with JobQueue(url, pool_size=1) as jq:
        ids = jq.enqueue_many(jobs)
    record_enqueued(url, ids)
    return ids


def record_enqueued(url: str, ids: list[int]) -> None:
    with connect(url) as conn:
        conn.execute("INSERT INTO enqueue_ledger (job_id) SELECT unnest(%s::bigint[]) ON CONFLICT DO NOTHING", (ids,))


def completed_count(url: str, ids: list[int] | None = None) -> int:
    with connect(url) as conn:
        if ids is None:
            return int(scalar(conn, "SELECT count(*) FROM jobqueue.job_history WHERE state = 'completed'"))
        return int(
            scalar(
                conn,
                "SELECT count(*) FROM jobqueue.job_history WHERE state = 'completed' AND id = ANY(%s)",
                (ids,),
            )
        )


def ledger_drained(url: str, dead_ok: Iterable[int] = ()) -> bool:
    """Every acknowledged job finished (completed, or dead for the ids allowed to die)."""
    with connect(url) as conn:
        left = scalar(
            conn,
            "SELECT count(*) FROM enqueue_ledger l WHERE NOT EXISTS (SELECT 1 FROM jobqueue.job_history h "
            "WHERE h.id = l.job_id AND h.state = 'completed') AND NOT (l.job_id = ANY(%s) AND EXISTS "
            "(SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = l.job_id))",
            (list(dead_ok),),
        )
    return int(left) == 0


def rate(url: str, start: datetime, end: datetime, *, exclude: Iterable[int] = ()) -> float:
    """Accepted completions per second in [start, end) of database time."""
    seconds = (end - start).total_seconds()
    if seconds <= 0:
        return 0.0
    with connect(url) as conn:
        n = scalar(
            conn,
            "SELECT count(*) FROM jobqueue.job_event WHERE to_state = 'completed' AND at >= %s AND at < %s "
            "AND NOT (job_id = ANY(%s))",
            (start, end, list(exclude)),
        )
    return float(n) / seconds


class Feeder(threading.Thread):
    """A producer keeping the backlog of runnable jobs at least `low` (steady load).

    Every acknowledged id goes to ``acked`` (and to enqueue_ledger at ``stop``); a failed
    enqueue is counted in ``errors``, never retried silently.
    """

    def __init__(self, url: str, *, low: int, batch: int, sleep_ms: tuple[int, int] = (0, 20)) -> None:
        super().__init__(name="chaos-feeder", daemon=True)
        self.url = url
        self.low = low
        self.batch = batch
        self.sleep_ms = sleep_ms
        self.acked: list[int] = []
        self.errors = 0
        self.last_error = ""
        self._stop_event = threading.Event()
        self._seed = 0

    def run(self) -> None:
        jq = JobQueue(self.url, pool_size=1, pool_timeout=2)
        try:
            while not self._stop_event.is_set():
                try:
                    with jq.pool.connection() as conn:
                        backlog = scalar(
                            conn,
                            "SELECT count(*) FROM jobqueue.job WHERE state IN ('pending', 'retrying')",
                        )
                    if backlog < self.low:
                        self._seed += 1
                        jobs = work_jobs(self.batch, seed=self._seed, sleep_ms=self.sleep_ms)
                        self.acked.extend(jq.enqueue_many(jobs))
                        continue
                except Exception as exc:  # an outage: counted, reported, tried again
                    self.errors += 1
                    self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self._stop_event.wait(0.1)
        finally:
            jq.close()

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join(30)
        record_enqueued(self.url, self.acked)
        return self.acked


def load_accepts(url: str, log_paths: Iterable[Path]) -> int:
    """Fill accept_ledger from the workers' own acknowledgements (UNIQUE(job_id) fails loudly)."""
    seen: dict[tuple[int, int], str] = {}
    for path in log_paths:
        for record in log_records(path):
            if record.get("action") in ("job_completed", "job_already_completed"):
                seen.setdefault((int(record["job_id"]), int(record["token"])), path.stem)
    with connect(url) as conn:
        conn.execute("TRUNCATE accept_ledger")
        for (job_id, token), worker in sorted(seen.items()):
            try:
                conn.execute(
                    "INSERT INTO accept_ledger (job_id, token, worker) VALUES (%s, %s, %s)", (job_id, token, worker)
                )
            except psycopg.errors.UniqueViolation:
                other = conn.execute("SELECT * FROM accept_ledger WHERE job_id = %s", (job_id,)).fetchone()
                raise AssertionError(
                    f"two accepted completions of job {job_id}: token {token} ({worker}) and {other}"
                ) from None
    return len(seen)


def check_invariants(
    url: str,
    log_paths: Iterable[Path],
    *,
    dead_ok: Iterable[int] = (),
    kills: int = 0,
    slots_per_kill: int = 0,
    killed: Iterable[str] = (),
) -> dict[str, int]:
    """The end-of-test invariant query (RELIABILITY.md 4.2); returns the figures.

    * every enqueue_ledger id is completed (or dead_letter, for the ids in ``dead_ok``);
    * nothing is left processing; no job has attempt > max_attempts;
    * every completed job has exactly one accepted completion (accept_ledger, from the
      workers, and job_event, from the database), with the job's final token; a worker in
      ``killed`` may have died between its completion's commit and its log line, so its
      completions may be missing from accept_ledger (never wrong in it);
    * each job's job_event rows form a valid path of the state machine, every claim with a
      token greater than all before it, nothing after a terminal state;
    * executions - jobs <= kills x (concurrency + prefetch); this worker claims only for
      free slots, so prefetch is 0.
    """
    log_paths, killed = list(log_paths), list(killed)
    # A live worker may still be retrying the acknowledgement of a completion the database
    # already committed (outcome unknown after a crash): give it up to 30 s to learn it.
    deadline = time.monotonic() + 30
    while True:
        accepted_by_workers = load_accepts(url, log_paths)
        with connect(url) as conn:
            pending = scalar(
                conn,
                "SELECT count(*) FROM jobqueue.job_history h JOIN enqueue_ledger l ON l.job_id = h.id "
                "JOIN jobqueue.job_event e ON e.job_id = h.id AND e.token = h.token AND e.to_state = 'processing' "
                "WHERE h.state = 'completed' AND NOT EXISTS (SELECT 1 FROM accept_ledger a WHERE a.job_id = h.id) "
                "AND NOT (e.detail->>'worker_id' = ANY(%s))",
                (list(killed),),
            )
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    dead_ok = list(dead_ok)
    with connect(url) as conn:
        acked = [row["job_id"] for row in conn.execute("SELECT job_id FROM enqueue_ledger ORDER BY job_id")]
        assert acked, "no acknowledged enqueue in enqueue_ledger: the test checked nothing"
        final = {
            row["id"]: row
            for row in conn.execute(
                "SELECT id, state::text AS state, token, attempt, max_attempts FROM jobqueue.jobs WHERE id = ANY(%s)",
                (acked,),
            )
        }
        lost = [i for i in acked if i not in final]
        assert not lost, f"{len(lost)} acknowledged jobs do not exist any more, e.g. {lost[:5]}"
        unfinished = [
            i
            for i in acked
            if not (final[i]["state"] == "completed" or (i in dead_ok and final[i]["state"] == "dead_letter"))
        ]
        assert not unfinished, (
            f"{len(unfinished)} acknowledged jobs not finished, e.g. {[final[i] for i in unfinished[:5]]}: "
            f"{state_counts(conn)}"
        )
        running = scalar(conn, "SELECT count(*) FROM jobqueue.job WHERE state = 'processing'")
        assert running == 0, f"{running} jobs still processing after the drain"
        over = scalar(conn, "SELECT count(*) FROM jobqueue.jobs WHERE attempt > max_attempts")
        assert over == 0, f"{over} jobs with attempt > max_attempts"

        accepts = {row["job_id"]: row["token"] for row in conn.execute("SELECT job_id, token FROM accept_ledger")}
        completed = [i for i in acked if final[i]["state"] == "completed"]
        no_ack = [i for i in completed if i not in accepts]
        if no_ack:
            # A worker SIGKILLed between the commit of its completion and its log line never
            # got to record it; any other silent acceptance is a failure.
            claimers = {
                row["job_id"]: row["worker"]
                for row in conn.execute(
                    "SELECT e.job_id, e.detail->>'worker_id' AS worker FROM jobqueue.job_event e "
                    "JOIN jobqueue.jobs j ON j.id = e.job_id AND j.token = e.token "
                    "WHERE e.job_id = ANY(%s) AND e.to_state = 'processing'",
                    (no_ack,),
                )
            }
            killed = set(killed)
            silent = [(i, claimers.get(i)) for i in no_ack if claimers.get(i) not in killed]
            assert not silent, f"completed jobs no live worker was told were accepted: {silent[:5]}"
        stale = [
            (i, accepts[i], final[i]["token"]) for i in completed if i in accepts and accepts[i] != final[i]["token"]
        ]
        assert not stale, f"accepted token differs from the final token (job, accepted, final): {stale[:5]}"
        foreign = [j for j in accepts if j in final and final[j]["state"] != "completed"]
        assert not foreign, f"workers were told jobs completed that are not: {foreign[:5]}"

        trails = events_by_job(conn, list(acked))
        for job_id in acked:
            path = [(e["from_state"], e["to_state"], e["token"]) for e in trails.get(job_id, [])]
            check_path(job_id, path, final[job_id])

        executions = int(scalar(conn, "SELECT count(*) FROM exec_ledger WHERE job_id = ANY(%s)", (acked,)))
    duplicates = executions - len(acked)
    assert duplicates >= 0, f"fewer executions ({executions}) than jobs ({len(acked)}): the exec ledger misses some"
    if kills:
        bound = kills * slots_per_kill
        assert duplicates <= bound, f"{duplicates} duplicate executions > kills x slots = {kills} x {slots_per_kill}"
    return {
        "jobs": len(acked),
        "lost": 0,
        "executions": executions,
        "duplicates": duplicates,
        "accepted": len(completed),
        "accepted_by_workers": accepted_by_workers,
        "accepted_unlogged": len(no_ack),
    }


def check_path(job_id: int, path: list[tuple[str | None, str | None, int | None]], final: dict[str, Any]) -> None:
    """One job's audit trail is a valid path with strictly increasing claim tokens."""
    assert path, f"job {job_id} has no job_event rows"
    state: str | None = None
    token: int | None = None
    completions = 0
    for from_state, to_state, event_token in path:
        where = f"job {job_id}: {path}"
        assert from_state == state, f"event from {from_state} but the job was {state}; {where}"
        assert (from_state, to_state) in VALID_TRANSITIONS, f"invalid transition {from_state}->{to_state}; {where}"
        if to_state == "processing":
            assert event_token is not None and (token is None or event_token > token), f"token not increasing; {where}"
            token = event_token
        elif from_state == "processing":
            assert event_token == token, f"{from_state}->{to_state} by token {event_token}, lease {token}; {where}"
        if to_state == "completed":
            completions += 1
        state = to_state
    assert state == final["state"], f"job {job_id}: trail ends in {state}, the job is {final['state']}"
    assert token == final["token"], f"job {job_id}: last claim token {token}, the job has {final['token']}"
    assert completions <= 1, f"job {job_id} completed {completions} times"


# -- phases: baseline, chaos, after ---------------------------------------------------------


def measure(url: str, seconds: float) -> tuple[float, datetime, datetime]:
    """Completions per second over the next `seconds` (database time)."""
    start = db_now(url)
    time.sleep(seconds)
    end = db_now(url)
    return rate(url, start, end), start, end


def warm_up(url: str, timeout: float = 60) -> None:
    """Wait for the fleet to be under way (first completions), then a second more."""
    wait_for(lambda: completed_count(url) > 0, timeout, "the first completions", interval=0.1)
    time.sleep(1.0)


def pct(value: float, baseline: float) -> float | None:
    return round(100.0 * value / baseline, 1) if baseline > 0 else None


def orphan_recovery(url: str, kills: list[tuple[str, datetime]]) -> list[float]:
    """Seconds from each kill to each of the victim's leases being handed back by reconcile.

    An orphan is a lease the killed worker held: a claim by that worker whose next event
    is reconcile's expiry. 4.1: a lost worker's job is claimable within vt + R.
    """
    delays: list[float] = []
    with connect(url) as conn:
        for victim, killed_at in kills:
            rows = conn.execute(
                "SELECT extract(epoch FROM x.at - %s) AS delay FROM jobqueue.job_event e "
                "JOIN jobqueue.job_event x ON x.job_id = e.job_id AND x.token = e.token "
                "AND x.from_state = 'processing' AND x.detail->>'by' = 'reconcile' "
                "WHERE e.to_state = 'processing' AND e.detail->>'worker_id' = %s AND x.at >= %s",
                (killed_at, victim, killed_at),
            ).fetchall()
            delays.extend(float(row["delay"]) for row in rows)
    return delays


def wait_drained(url: str, timeout: float, dead_ok: Iterable[int] = ()) -> float:
    """Wait until every acknowledged job finished; return how long that took.

    Past ``timeout`` it fails with the invariant's own message (which jobs are lost or not
    finished, and in what state), so a lost job is reported as such, well before the
    test's pytest timeout (keep ``timeout`` below it)."""
    dead_ok = list(dead_ok)
    began = time.monotonic()
    try:
        wait_for(lambda: ledger_drained(url, dead_ok), timeout, "every acknowledged job to finish", interval=0.25)
    except AssertionError:
        raise AssertionError(f"not drained within {timeout:g} s: {undrained(url, dead_ok)}") from None
    return time.monotonic() - began


def undrained(url: str, dead_ok: Iterable[int] = ()) -> str:
    """What keeps the enqueue ledger from being drained, in check_invariants' words."""
    with connect(url) as conn:
        lost = [
            row["job_id"]
            for row in conn.execute(
                "SELECT l.job_id FROM enqueue_ledger l WHERE NOT EXISTS "
                "(SELECT 1 FROM jobqueue.jobs j WHERE j.id = l.job_id) ORDER BY l.job_id"
            )
        ]
        unfinished = conn.execute(
            "SELECT j.id, j.state::text AS state, j.token, j.attempt, j.max_attempts FROM enqueue_ledger l "
            "JOIN jobqueue.jobs j ON j.id = l.job_id WHERE j.state::text <> 'completed' "
            "AND NOT (j.id = ANY(%s) AND j.state::text = 'dead_letter') ORDER BY j.id",
            (list(dead_ok),),
        ).fetchall()
        counts = state_counts(conn)
    parts = []
    if lost:
        parts.append(f"{len(lost)} acknowledged jobs do not exist any more, e.g. {lost[:5]}")
    if unfinished:
        parts.append(f"{len(unfinished)} acknowledged jobs not finished, e.g. {unfinished[:5]}")
    return "; ".join(parts or ["every acknowledged job has finished now"]) + f" (jobs by state: {counts})"


class Reconcilers:
    """`jobqueue reconcile` CLI runs in a loop, `count` at once, `every` seconds apart (CHAOS-08)."""

    def __init__(self, url: str, *, count: int = 3, every: float = 0.2) -> None:
        self.url = url
        self.every = every
        self.runs = 0
        self.expired = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(count)]

    def start(self) -> Reconcilers:
        for thread in self._threads:
            thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            proc = subprocess.run(
                [sys.executable, "-m", "jobqueue", "--database-url", self.url, "reconcile", "--json"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            with self._lock:
                if proc.returncode != 0 or proc.stderr.strip():
                    self.errors.append(f"exit {proc.returncode}: {proc.stderr.strip()[:500]}")
                else:
                    self.runs += 1
                    self.expired += int(json.loads(proc.stdout)["expired_leases"])
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(150)
