"""The worker: claim -> run -> acknowledge, with heartbeats, timeouts and a graceful stop.

Threads, each owning one thing:

* main        acknowledges the jobs that finished and claims up to the free slots, in one
              transaction per round (complete_many + claim, pipelined); sleeps until a
              NOTIFY, a finished job, its poll timer or the next delayed job's due time.
              The alert notifications' queue is claimed apart, now and then
              (jobqueue.alerts.claiming), so the regular claim stays a one-queue claim
* listener    LISTEN on a dedicated connection (jobqueue.listener)
* keeper      heartbeats leases, enforces timeouts, refreshes the worker row and runs
              reconcile every so often
* fence       self-fences: past a lease's local (monotonic) deadline, tells its handler to
              stop side effects; never touches the database, so a hung connection cannot stop it
* handlers    a pool of threads for plain functions, fed a claimed batch at a time;
              one event loop thread for async ones (jobqueue.handlers)

No database transaction is open while a handler runs: the claim commits, the handler runs,
the acknowledgement is a new short statement. Every database error in these loops is met
with a capped, jittered back-off and a retry, never with an exit.

An acknowledgement (complete, fail, snooze, release) is idempotent under its token, so it is
retried on any error until the database answers it, fenced answers included (``lease_lost``,
``already_completed``). The keeper heartbeats the lease meanwhile. Only an error that is not
an outage and outlasts one more lease (ACK_RETRY_LEASES) makes the worker give the
acknowledgement up: it stops heartbeating that lease (reconcile then hands the job back),
logs ``ack_undelivered`` naming the job, and the worker exits with EXIT_UNDELIVERED when it
stops.

Beside it: :mod:`jobqueue.outage` (the back-off, and which errors are transient),
:mod:`jobqueue.lease` (what the worker holds per job, heartbeats, self-fencing, abandoning a
job, the clock check), :mod:`jobqueue.outcome` (what a handler's result or exception becomes
in the acknowledgement, and the fields every log line about a job carries) and
:mod:`jobqueue.reports` (the periodic summary). WorkerConfig is in :mod:`jobqueue.config`.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import random
import signal
import socket
import threading
import time
import traceback as tb
import uuid
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any

from psycopg.rows import tuple_row

from jobqueue.alerts.claiming import ALERTS_BATCH, AlertsClaim
from jobqueue.alerts.notify import ALERTS_QUEUE, BUILTIN_TYPES, NOTIFY_TYPE

# The worker's configuration lives with the others (a type the client names without importing
# the worker); re-exported here, where the CLI and older code import it from.
from jobqueue.config import CONCURRENCY as CONCURRENCY
from jobqueue.config import POLL_INTERVAL_S as POLL_INTERVAL_S
from jobqueue.config import RECONCILE_INTERVAL_S as RECONCILE_INTERVAL_S
from jobqueue.config import SHUTDOWN_TIMEOUT_S as SHUTDOWN_TIMEOUT_S
from jobqueue.config import WORKER_HEARTBEAT_S as WORKER_HEARTBEAT_S
from jobqueue.config import WorkerConfig as WorkerConfig
from jobqueue.config import split_options
from jobqueue.errors import ConfigurationError, JobQueueError, SchemaOutOfDate
from jobqueue.handlers import Handlers
from jobqueue.lease import (
    HEARTBEAT_FRACTION,
    KEEPER_TICK_S,
    LEASE_SAFETY_MARGIN_S,
    Running,
    abandon,
    check_clock,
    fence_expired,
    heartbeat,
)
from jobqueue.listener import Listener
from jobqueue.models import AckStatus, ClaimedJob, ErrorClass
from jobqueue.outage import RETRYABLE, Backoff, is_transient, one_line
from jobqueue.outcome import NoHandler, Success, error_text, fail_params, job_extra, output_json
from jobqueue.reports import Reporter
from jobqueue.retry import Cancel, Retry, Snooze, as_timedelta, classify
from jobqueue.round import Statement, run_round
from jobqueue.sql import query
from jobqueue.tasks import JobContext

if TYPE_CHECKING:
    from jobqueue.client import JobQueue

#: Lease used when neither the worker, the job nor its queue sets one (as in the SQL API).
DEFAULT_VISIBILITY_TIMEOUT_S = 30.0
ACK_BATCH_WINDOW_S = 0.002
#: complete_many takes at most 1000 jobs.
ACK_BATCH_MAX = 1000
MAX_CLAIM_BATCH = 1000
_ROUND_ACK = query("worker_round_ack").encode()
_ROUND_CLAIM = query("worker_round_claim").encode()
_CLAIM_NAMES = ("queues", "worker_id", "batch", "visibility_timeout", "types")
#: An acknowledgement the database keeps refusing (not an outage, not a fenced answer) is
#: retried for this many lease lengths from its first refusal, then given up.
ACK_RETRY_LEASES = 1.0
#: Exit code of a worker that stopped with acknowledgements it could not deliver.
EXIT_UNDELIVERED = 1

log = logging.getLogger("jobqueue.worker")


class Worker:
    def __init__(self, jq: JobQueue, config: WorkerConfig) -> None:
        self.jq = jq
        self.config = config.validate()
        self.id = config.name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.types = list(config.types) if config.types is not None else jq.registry.names()
        #: The queues served: the configured ones, and the alert notifications' unless
        #: config.alerts is off (see jobqueue.alerts.notify). The regular claim names the
        #: configured ones only; the alerts queue, when added here, is claimed apart (alerts).
        self.queues = tuple(config.queues)
        self.claim_queues = list(config.queues)
        self.alerts: AlertsClaim | None = None
        if config.alerts and jq.registry.get(NOTIFY_TYPE) is not None:
            if ALERTS_QUEUE not in self.queues:
                self.queues += (ALERTS_QUEUE,)
                self.alerts = AlertsClaim(self.config.poll_interval_s)
            if NOTIFY_TYPE not in self.types:
                self.types.append(NOTIFY_TYPE)
        self._running: dict[int, Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._signals = 0
        #: Handlers that returned, waiting to be acknowledged by the main loop (under _lock).
        self._done: list[tuple[Running, Any]] = []
        self.handlers = Handlers(self._finish)
        self._next_due: float | None = None
        self.jobs_done = 0
        self.listener: Listener | None = None
        #: Slots freed by fail/snooze/release/timeouts (burst: a claim that began before one
        #: of them committed cannot have seen the job it may have made runnable again).
        self._releases = 0
        #: Job id -> the acknowledgement this worker gave up delivering (see the module doc).
        self.undelivered: dict[int, str] = {}
        self.reporter = Reporter(jq, self.id, self.queues, self.types, self.config.report_interval_s)

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        if not set(self.types) - BUILTIN_TYPES and ALERTS_QUEUE not in self.config.queues:
            raise ConfigurationError("no tasks registered: nothing for this worker to run (see --app)")
        if self.config.install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            # `kill -USR1 <pid>` writes every thread's stack to stderr: what is it doing?
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        self._wait_for_database()
        if self._stopping.is_set():
            return 0
        check_clock(self.jq.pool)
        self._call_retrying(
            "register",
            "register_worker",
            {
                "worker_id": self.id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(self.queues),
                "concurrency": self.config.concurrency,
                "metadata": json.dumps({"types": self.types}),
            },
        )
        self.jq.sync_schedules()  # create or replace the app's declared schedules, pause the dropped ones
        log.info(
            "worker started",
            extra={
                "action": "worker_started",
                "worker_id": self.id,
                "queues": ",".join(self.queues),
                "concurrency": self.config.concurrency,
            },
        )
        threads = [
            threading.Thread(target=self._keeper, name="jobqueue-keeper", daemon=True),
            threading.Thread(target=self._fence, name="jobqueue-fence", daemon=True),
        ]
        for _ in range(self.config.concurrency):
            self.handlers.spawn_thread()
        if self.config.listen:
            listen_url = self.jq.target.url
            if self.config.listen_url:
                listen_url, _ = split_options(self.config.listen_url, "listen_url")
            self.listener = Listener(
                listen_url,
                self.queues,
                self._wake.set,
                application_name=f"jobqueue-listen:{self.id}"[:63],
                connect_kwargs=self.jq.target.connect_kwargs(),
                probe=self._notify_probe,
                on_queue=self._on_queue_notify,
            )
            self.listener.start()
        for thread in threads:
            thread.start()
        try:
            self._main_loop()
        finally:
            self._shutdown(threads)
        if self.undelivered:
            ids = sorted(self.undelivered)
            log.error(
                f"stopped with {len(ids)} acknowledgements not delivered (jobs {', '.join(map(str, ids[:50]))}"
                f"{' ...' if len(ids) > 50 else ''}): they run again once their leases run out",
                extra={"action": "worker_undelivered", "worker_id": self.id, "job_ids": ids},
            )
            return EXIT_UNDELIVERED
        return 0

    def _on_queue_notify(self, queue: str) -> None:
        if queue == ALERTS_QUEUE and self.alerts is not None:
            self.alerts.notified()

    def _notify_probe(self, payload: str) -> None:
        """The listener's test NOTIFY, sent the way producers' notifications come: the pool."""
        with self.jq.pool.connection() as conn:
            conn.execute(query("notify_probe"), {"payload": payload})

    def stop(self) -> None:
        """Ask the worker to stop gracefully (what SIGTERM does)."""
        self._stopping.set()
        self._wake.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once", extra={"action": "worker_killed"})
            os._exit(128 + signum)
        log.info(
            "stopping: no new claims; waiting for running jobs",
            extra={"action": "worker_stopping", "signal": signal.Signals(signum).name, "running": len(self._running)},
        )
        self.stop()

    def _wait_for_database(self) -> None:
        backoff = Backoff("schema check")
        while not self._stopping.is_set():
            try:
                self.jq.check_schema()
                backoff.succeeded()
                return
            except SchemaOutOfDate:
                raise
            except RETRYABLE as exc:
                if isinstance(exc, JobQueueError) and not is_transient(exc):
                    raise
                self._stopping.wait(backoff.failed(exc))

    # -- main loop: claim ---------------------------------------------------------------------

    def _main_loop(self) -> None:
        """Acknowledge what finished and claim into the free slots: one transaction per round."""
        backoff = Backoff("claim")
        while not self._stopping.is_set():
            self._gather_batch()
            with self._lock:
                done, self._done = self._done[:ACK_BATCH_MAX], self._done[ACK_BATCH_MAX:]
                free = self.config.concurrency - len(self._running) + len(done)
            batch = min(free, MAX_CLAIM_BATCH)
            releases = self._releases
            looked = False
            try:
                if batch > 0 and self.alerts is not None and self.alerts.take(time.monotonic()):
                    looked = True
                    batch -= self._claim_alerts(min(batch, ALERTS_BATCH))
                claimed = self._claim_and_ack(done, batch)
                backoff.succeeded()
            except RETRYABLE as exc:
                self._requeue_acks(done, exc)
                self._wake.wait(backoff.failed(exc))
                self._wake.clear()
                continue
            if batch > 0:
                if claimed == batch:
                    continue  # there may be more: claim again as soon as slots free up
                if self.config.burst and claimed == 0 and not self._running and releases == self._releases:
                    if self.alerts is not None and not looked:
                        self.alerts.notified()  # the alerts queue too must be empty
                        continue
                    log.info("burst: nothing left to claim", extra={"action": "worker_drained"})
                    return
            if self._done:
                continue
            timeout = self.config.poll_interval_s * (0.8 + random.random() * 0.4)
            if claimed == 0 and batch > 0:
                due = self._time_to_next_due()
                if due is not None:
                    timeout = min(timeout, max(due, 0.0))
            if not self._wake.wait(timeout) and self.alerts is not None:
                self.alerts.notified()  # the poll (or a due time) came: look at the alerts queue too
            self._wake.clear()

    def _gather_batch(self) -> None:
        """When some of the running jobs have finished, give the rest a moment (at most
        ACK_BATCH_WINDOW_S) so that one statement acknowledges them together."""
        self._wake.clear()
        if self._done and len(self._done) < len(self._running) and not self._stopping.is_set():
            self._wake.wait(ACK_BATCH_WINDOW_S)  # _finish sets it when the last one is done
            self._wake.clear()

    def _claim_and_ack(self, done: list[tuple[Running, Any]], batch: int) -> int:
        """complete_many for the finished jobs, then claim, in one transaction and one
        write (a libpq pipeline: jobqueue/round.py): one commit per batch instead of two."""
        if not done and batch <= 0:
            return 0
        statements: list[Statement] = []
        if done:
            ack = {
                "ids": [r.job.id for r, _ in done],
                "tokens": [r.job.token for r, _ in done],
                "outputs": [output_json(value) for _, value in done],
            }
            statements.append((_ROUND_ACK, ("ids", "tokens", "outputs"), ack))
        if batch > 0:
            statements.append((_ROUND_CLAIM, _CLAIM_NAMES, self._claim_params(self.claim_queues, batch)))
        with self.jq.pool.connection() as conn:
            results = run_round(conn, statements)
        if done:
            self._acknowledged(done, {row[0]: row[1] for row in results[0]})
        rows = results[-1] if batch > 0 else []
        if rows:
            now = time.monotonic()
            self.handlers.dispatch([self._start(ClaimedJob.from_tuple(row), now) for row in rows])
        return len(rows)

    def _claim_params(self, queues: list[str], batch: int) -> dict[str, Any]:
        vt = self.config.visibility_timeout_s
        return {
            "queues": queues,
            "worker_id": self.id,
            "batch": batch,
            "visibility_timeout": timedelta(seconds=vt) if vt else None,
            "types": self.types,
        }

    def _claim_alerts(self, batch: int) -> int:
        """Claim from the alerts queue alone (its own short transaction); how many were."""
        assert self.alerts is not None
        with self.jq.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            rows = cur.execute(query("claim"), self._claim_params([ALERTS_QUEUE], batch)).fetchall()
        self.alerts.claimed(batch, len(rows))
        if rows:
            now = time.monotonic()
            self.handlers.dispatch([self._start(ClaimedJob.from_tuple(row), now) for row in rows])
        return len(rows)

    def _requeue_acks(self, done: list[tuple[Running, Any]], exc: BaseException) -> None:
        """A round failed and rolled back: its acknowledgements are tried again next round
        (after the main loop's back-off). If the database refused the round (not an outage),
        acknowledge them on their own at once (the claim may be what failed); if that is
        refused too, they are tried again as well, until ACK_RETRY_LEASES after their first
        refusal."""
        if not done:
            return
        if is_transient(exc):
            with self._lock:
                self._done[:0] = done
            return
        try:
            with self.jq.pool.connection() as conn:
                rows = conn.execute(
                    query("complete_many"),
                    {
                        "ids": [r.job.id for r, _ in done],
                        "tokens": [r.job.token for r, _ in done],
                        "outputs": [output_json(value) for _, value in done],
                    },
                ).fetchall()
            self._acknowledged(done, {row["id"]: row["status"] for row in rows})
        except RETRYABLE as again:
            if is_transient(again):
                with self._lock:
                    self._done[:0] = done
                return
            now = time.monotonic()
            keep: list[tuple[Running, Any]] = []
            for item in done:
                running = item[0]
                if self._refused(running, "complete", again, now):
                    keep.append(item)
                else:
                    self._give_up(running, "complete", again)
            with self._lock:
                self._done[:0] = keep

    def _refused(self, running: Running, what: str, exc: BaseException, now: float) -> bool:
        """The database refused an acknowledgement (not an outage): True while it is worth
        trying again (until ACK_RETRY_LEASES lease lengths after the first refusal)."""
        if running.ack_give_up is None:
            running.ack_give_up = now + running.lease_s * ACK_RETRY_LEASES
            log.warning(
                f"{what} refused by the database; retrying it",
                extra=job_extra(
                    running.job, "ack_retry", error=one_line(exc), give_up_in_s=round(running.ack_give_up - now, 1)
                ),
            )
        return now < running.ack_give_up

    def _give_up(self, running: Running, what: str, exc: BaseException) -> None:
        """Stop trying to acknowledge a job: its lease is no longer heartbeated, so it runs
        out and reconcile hands the job back; the worker's exit code will say so."""
        log.error(
            f"{what} could not be delivered; giving it up: the job runs again after its lease",
            extra=job_extra(running.job, "ack_undelivered", error=one_line(exc), ack=what),
        )
        with self._lock:
            self.undelivered[running.job.id] = what
            self._running.pop(running.job.id, None)
        self._wake.set()

    def _acknowledged(self, done: list[tuple[Running, Any]], statuses: dict[int, str]) -> None:
        for running, _ in done:
            self._log_ack(running.job, str(statuses.get(running.job.id)), "complete", running.started)
        with self._lock:
            for running, _ in done:
                self._running.pop(running.job.id, None)

    def _time_to_next_due(self) -> float | None:
        try:
            with self.jq.pool.connection() as conn:
                row = conn.execute(query("next_due"), {"queues": list(self.queues)}).fetchone()
        except RETRYABLE:
            return None
        seconds = None if row is None else row["seconds"]
        return None if seconds is None else float(seconds)

    def _start(self, job: ClaimedJob, now: float) -> Running:
        lease = job.lease_duration
        lease_s = (
            lease.total_seconds()
            if isinstance(lease, timedelta)
            else (self.config.visibility_timeout_s or DEFAULT_VISIBILITY_TIMEOUT_S)
        )
        ctx = JobContext(
            id=job.id,
            token=job.token,
            queue=job.queue,
            type=job.type,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            metadata=job.metadata,
            log=partial(self._fenced, "add_log", job, "message"),
            progress=partial(self._fenced, "set_progress", job, "percent"),
        )
        running = Running(
            job=job,
            ctx=ctx,
            task=self.jq.registry.get(job.type),
            started=now,
            lease_s=lease_s,
            next_heartbeat=now + lease_s * HEARTBEAT_FRACTION,
            lease_deadline=now + lease_s - LEASE_SAFETY_MARGIN_S,
            deadline=now + job.timeout.total_seconds() if job.timeout else None,
        )
        with self._lock:
            self._running[job.id] = running
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job claimed", extra=job_extra(job, "job_claimed"))
        return running

    # -- acknowledgements ------------------------------------------------------------------------

    def _finish(self, running: Running, outcome: Any) -> None:
        """Acknowledge a handler's outcome (unless the job was abandoned), free its slot."""
        with running.lock:
            if running.abandoned or running.finished:
                return
            running.finished = True
        if isinstance(outcome, Success):
            # the main loop acknowledges it (batched) and frees the slot
            with self._lock:
                self._done.append((running, outcome.value))
                first, last = len(self._done) == 1, len(self._done) >= len(self._running)
            if first or last:
                self._wake.set()
            return
        try:
            name, params = self._failure_ack(running, outcome)
            self._ack(running, name, **params)
        finally:
            self._release_slot(running.job.id)

    def _failure_ack(self, running: Running, outcome: BaseException) -> tuple[str, dict[str, Any]]:
        """The acknowledgement for a handler that raised: which call, with what."""
        if isinstance(outcome, Snooze):
            return "snooze", {"delay": outcome.delay}
        if isinstance(outcome, Cancel):
            return "fail", fail_params(outcome.reason, ErrorClass.CANCELLED)
        if isinstance(outcome, Retry):
            return "fail", fail_params(outcome.reason, ErrorClass.TRANSIENT, retry_in=outcome.after)
        trace = "".join(tb.format_exception(outcome))[-8000:]
        try:
            if isinstance(outcome, NoHandler):
                error_class = ErrorClass.PERMANENT
            else:
                error_class = classify(outcome, self.jq.error_classes)
            retry_in = None
            if running.task is not None and running.task.retry is not None:
                retry_in = as_timedelta(running.task.retry(running.job.attempt, outcome))
        except Exception as exc:  # a bad error_class attribute or a raising retry callable
            log.error(
                "could not classify a failure; retrying it as transient",
                extra=job_extra(running.job, "classify_error", error=one_line(exc)),
            )
            error_class, retry_in = ErrorClass.TRANSIENT, None
        return "fail", fail_params(error_text(outcome), error_class, retry_in=retry_in, traceback=trace)

    def _ack(self, running: Running, name: str, **params: Any) -> str:
        """Deliver one acknowledgement: retried through outages for as long as they last,
        and through refusals until ACK_RETRY_LEASES after the first (then given up)."""
        backoff = Backoff(name)
        args = {"id": running.job.id, "token": running.job.token, **params}
        while True:
            try:
                with self.jq.pool.connection() as conn:
                    row = conn.execute(query(name), args).fetchone()
                backoff.succeeded()
                break
            except RETRYABLE as exc:
                if not is_transient(exc) and not self._refused(running, name, exc, time.monotonic()):
                    self._give_up(running, name, exc)
                    return "undelivered"
                time.sleep(backoff.failed(exc))
        status = str((row or {}).get("status"))
        self._log_ack(running.job, status, name, running.started)
        return status

    def _log_ack(self, job: ClaimedJob, status: str, what: str, started: float) -> None:
        """Count the outcome for the summary; one DEBUG line per job (its outcome and run time)."""
        self.reporter.count(status)
        if status == AckStatus.LEASE_LOST:
            log.warning(
                f"{what} rejected: this worker no longer holds the lease",
                extra=job_extra(job, "ack_rejected", status=status),
            )
        elif status == AckStatus.OUTPUT_TOO_LARGE:
            # The handler ran, but its result is over the queue's max_output_bytes: the database
            # kept none of it and dead-lettered the job (reason output_too_large), not retried.
            log.error(
                "handler result too large to store: the job is a dead letter (reason output_too_large);"
                " raise the queue's max_output_bytes or return less, then redrive it",
                extra=job_extra(job, "output_too_large", status=status),
            )
        else:
            if status in (AckStatus.COMPLETED, AckStatus.ALREADY_COMPLETED):
                self.jobs_done += 1
            if log.isEnabledFor(logging.DEBUG):
                duration = round(time.monotonic() - started, 3)
                log.debug(f"job {status}", extra=job_extra(job, f"job_{status}", duration_s=duration))

    def _release_slot(self, job_id: int) -> None:
        with self._lock:
            self._running.pop(job_id, None)
            self._releases += 1
        self._wake.set()

    def _fenced(self, name: str, job: ClaimedJob, param: str, value: Any) -> None:
        """add_log / set_progress from a handler: fenced by the lease, errors raised to it."""
        with self.jq.pool.connection() as conn:
            row = conn.execute(query(name), {"id": job.id, "token": job.token, param: value}).fetchone()
        if row and row["status"] == AckStatus.LEASE_LOST:
            running = self._running.get(job.id)
            if running is not None:
                running.ctx._set_lease_lost()

    def _call_retrying(self, what: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run a statement until the database answers (a lost ack must not be dropped).

        Acknowledgements are idempotent by token, so repeating one whose commit outcome
        was unknown is safe.
        """
        backoff = Backoff(what)
        while True:
            try:
                with self.jq.pool.connection() as conn:
                    row = conn.execute(query(name), params).fetchone()
                backoff.succeeded()
                return row or {}
            except RETRYABLE as exc:
                if not is_transient(exc):
                    raise
                time.sleep(backoff.failed(exc))

    # -- keeper: heartbeats, timeouts, worker row, reconcile ------------------------------------

    def _keeper(self) -> None:
        beat_every = self.config.heartbeat_interval_s
        next_worker_beat = time.monotonic() + beat_every
        interval = self.config.reconcile_interval_s
        next_reconcile = time.monotonic() + (interval * random.random() if interval else 0)
        backoff = Backoff("heartbeat")
        while True:
            if self._stopping.is_set():
                if not self._running:
                    return  # keep leases alive until the last running job is done or handed back
                time.sleep(KEEPER_TICK_S)
            else:
                self._stopping.wait(KEEPER_TICK_S)
            now = time.monotonic()
            self._enforce_timeouts(now)
            due = [r for r in list(self._running.values()) if r.next_heartbeat <= now and not r.abandoned]
            if due:
                try:
                    heartbeat(self.jq.pool, due)
                    backoff.succeeded()
                except RETRYABLE as exc:
                    backoff.failed(exc)
            if self._stopping.is_set():
                continue
            if now >= next_worker_beat:
                next_worker_beat = now + beat_every
                self._quietly("worker_heartbeat", {"worker_id": self.id, "jobs_done": self.jobs_done})
            if interval and now >= next_reconcile:
                next_reconcile = now + interval
                self._quietly("reconcile", {"batch": 1000, "dry_run": False})
            if self.reporter.due(now):
                self.reporter.report(len(self._running))

    def _fence(self) -> None:
        """Self-fencing, on a thread of its own that never waits on the database.

        The keeper cannot do it: on a black-holed connection its heartbeat statement hangs
        (the peer's TCP stack still acknowledges, so no timeout fires) and it would never
        look at the deadlines again, while handlers keep starting side effects.
        """
        while not (self._stopping.is_set() and not self._running):
            time.sleep(KEEPER_TICK_S)
            fence_expired(list(self._running.values()), time.monotonic())

    def _enforce_timeouts(self, now: float) -> None:
        for running in list(self._running.values()):
            if running.deadline is None or now < running.deadline:
                continue
            if not abandon(running):
                continue
            if running.future is None and running.task is not None:
                self.handlers.spawn_thread()  # the stuck thread keeps its slot until it returns
            limit = running.job.timeout.total_seconds() if running.job.timeout else 0
            log.warning("job timed out; abandoning it", extra=job_extra(running.job, "job_timeout"))
            # On a thread of its own: an acknowledgement being retried must not hold up the
            # keeper, which heartbeats every other lease.
            threading.Thread(
                target=self._ack_and_release,
                args=(running, "fail", fail_params(f"timed out after {limit:g}s", ErrorClass.TIMEOUT)),
                name="jobqueue-timeout-ack",
                daemon=True,
            ).start()

    def _ack_and_release(self, running: Running, name: str, params: dict[str, Any]) -> None:
        try:
            self._ack(running, name, **params)
        finally:
            self._release_slot(running.job.id)

    def _quietly(self, name: str, params: dict[str, Any]) -> None:
        try:
            with self.jq.pool.connection() as conn:
                row = conn.execute(query(name), params).fetchone()
            if name == "reconcile" and row and any(v for v in (row["summary"] or {}).values() if isinstance(v, int)):
                log.info("reconcile", extra={"action": "reconcile", **row["summary"]})
        except RETRYABLE as exc:
            log.debug(f"{name} failed", extra={"action": "db_error", "step": name, "error": one_line(exc)})

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        self._stopping.set()
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        backoff = Backoff("complete")
        while self._running and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
            with self._lock:
                done, self._done = self._done[:ACK_BATCH_MAX], self._done[ACK_BATCH_MAX:]
            try:
                self._claim_and_ack(done, 0)
                backoff.succeeded()
            except RETRYABLE as exc:
                self._requeue_acks(done, exc)
                time.sleep(min(backoff.failed(exc), max(0.0, deadline - time.monotonic())))
        leftover = [r for r in list(self._running.values()) if not r.finished]
        for running in leftover:
            if not abandon(running):
                continue
            status = self._ack(running, "release")
            log.info("handed back unfinished job", extra=job_extra(running.job, "job_released", status=status))
            self._release_slot(running.job.id)
        # Jobs that finished as the grace ran out: one last try to acknowledge them (if it
        # fails, their leases run out and reconcile puts them back; nothing is lost, and the
        # exit code says they were not delivered).
        while self._done:
            with self._lock:
                done, self._done = self._done[:ACK_BATCH_MAX], self._done[ACK_BATCH_MAX:]
            try:
                self._claim_and_ack(done, 0)
            except RETRYABLE as exc:
                for running, _ in done:
                    self._give_up(running, "complete", exc)
                with self._lock:
                    rest, self._done = self._done, []
                for running, _ in rest:
                    self._give_up(running, "complete", exc)
                break
        for thread in threads:
            thread.join(timeout=30)
        self.handlers.stop()
        if self.listener is not None:
            self.listener.stop()
        self._quietly("unregister_worker", {"worker_id": self.id})
        self.handlers.stop_loop()
        log.info(
            "worker stopped",
            extra={
                "action": "worker_stopped",
                "worker_id": self.id,
                "jobs_done": self.jobs_done,
                "released": len(leftover),
            },
        )
