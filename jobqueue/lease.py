"""Keeping a claimed job's lease: what the worker holds per job, heartbeats, fencing, giving up.

The worker's keeper thread calls :func:`heartbeat` for the leases due (one ``heartbeat_many``
for all of them) and :func:`abandon` for a job past its timeout; the fence thread reads
:attr:`Running.lease_deadline`, the local (monotonic) time after which the lease is no longer
trusted (:func:`fence_expired`). :func:`check_clock` warns at start when this host's clock
is far from the database's, whose clock every lease runs on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobqueue.models import AckStatus, ClaimedJob
from jobqueue.outage import RETRYABLE
from jobqueue.outcome import job_extra
from jobqueue.sql import query
from jobqueue.tasks import JobContext, Task

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

#: Heartbeat a lease when a third of it has passed; stop trusting it this long before expiry.
HEARTBEAT_FRACTION = 1 / 3
LEASE_SAFETY_MARGIN_S = 1.0
KEEPER_TICK_S = 0.25
#: Warn at start when the local clock is further than this from the database's.
CLOCK_SKEW_WARN_S = 60.0

log = logging.getLogger("jobqueue.worker")


@dataclass
class Running:
    """A job this worker holds, and what the keeper thread needs to look after it."""

    job: ClaimedJob
    ctx: JobContext
    task: Task[Any, Any] | None
    started: float
    lease_s: float
    next_heartbeat: float
    lease_deadline: float
    deadline: float | None
    future: concurrent.futures.Future[Any] | None = None
    abandoned: bool = False
    finished: bool = False
    #: Monotonic time after which a refused acknowledgement is given up (set at its first refusal).
    ack_give_up: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def heartbeat(pool: ConnectionPool[Connection[dict[str, Any]]], due: list[Running]) -> None:
    """Extend the leases of ``due`` in one statement; mark the lost ones and the cancel requests."""
    extend = max(r.lease_s for r in due)
    sent = time.monotonic()
    with pool.connection() as conn:
        rows = conn.execute(
            query("heartbeat_many"),
            {
                "ids": [r.job.id for r in due],
                "tokens": [r.job.token for r in due],
                "extend_by": timedelta(seconds=extend),
            },
        ).fetchall()
    by_id = {row["id"]: row for row in rows}
    for running in due:
        row = by_id.get(running.job.id)
        if row is None:
            continue
        if row["status"] == AckStatus.LEASE_LOST:
            running.ctx._set_lease_lost()
            running.ctx._set_cancelled()
            running.next_heartbeat = float("inf")
            log.warning("lease lost while running", extra=job_extra(running.job, "lease_lost"))
            continue
        running.next_heartbeat = sent + extend * HEARTBEAT_FRACTION
        running.lease_deadline = sent + extend - LEASE_SAFETY_MARGIN_S
        if row["cancel_requested"] and not running.ctx.cancelled:
            running.ctx._set_cancelled()
            log.info("cancel requested", extra=job_extra(running.job, "job_cancel_requested"))


def abandon(running: Running) -> bool:
    """Give up on a running job: its outcome will be ignored. False if it already ended."""
    with running.lock:
        if running.finished or running.abandoned:
            return False
        running.abandoned = True
    running.ctx._set_cancelled()
    if running.future is not None:
        running.future.cancel()  # an async handler is really cancelled; a thread cannot be
    return True


def fence_expired(held: list[Running], now: float) -> None:
    """Tell the handler of every job past its lease's local deadline to stop side effects."""
    for running in held:
        if now > running.lease_deadline and not running.ctx.lease_lost:
            running.ctx._set_lease_lost()  # heartbeats have not got through in time
            log.warning(
                "lease deadline passed without a heartbeat; stop side effects",
                extra=job_extra(running.job, "lease_self_fenced"),
            )


def check_clock(pool: ConnectionPool[Connection[dict[str, Any]]]) -> None:
    """Warn when this host's clock is far from the database's.

    Nothing depends on it (leases and retry times are computed in SQL from the database
    clock; local deadlines use the monotonic clock), but logs and handlers that read the
    wall clock will be off by as much.
    """
    try:
        with pool.connection() as conn:
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now").fetchone()
    except RETRYABLE:
        return
    if row is None:
        return
    skew = time.time() - float(row["now"])
    if abs(skew) > CLOCK_SKEW_WARN_S:
        log.warning(
            f"this host's clock is {skew:+.0f} s off the database's; leases use the database clock",
            extra={"action": "clock_skew", "skew_s": round(skew, 1)},
        )
