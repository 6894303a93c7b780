"""Riding out a database outage: which errors are transient, and a capped, jittered back-off.

Every loop of the worker (claim, acknowledge, heartbeat, register) meets a database error
with :class:`Backoff` and tries again, never with an exit; :func:`is_transient` tells an
outage (retry) from a refusal (raise). Log lines go to the worker's logger.
"""

from __future__ import annotations

import logging
import random

import psycopg
from psycopg_pool import PoolTimeout

from jobqueue.errors import DatabaseUnavailable, JobQueueError

BACKOFF_MIN_S = 0.1
#: After an outage a worker claims again within this long of the database being back.
BACKOFF_MAX_S = 5.0

log = logging.getLogger("jobqueue.worker")


class Backoff:
    """Capped exponential back-off with jitter, and quiet logging while it lasts."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = BACKOFF_MIN_S
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(
            level,
            f"{self.what} failed; backing off",
            extra={
                "action": "db_error",
                "step": self.what,
                "error": one_line(exc),
                "retry_in_s": round(self.delay, 2),
                "failures": self.failures,
            },
        )
        wait = self.delay * (0.5 + random.random() / 2)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)
        return wait

    def succeeded(self) -> None:
        if self.failures:
            log.info(
                f"{self.what} works again",
                extra={"action": "db_recovered", "step": self.what, "failures": self.failures},
            )
        self.delay = BACKOFF_MIN_S
        self.failures = 0


#: Errors the loops meet with a back-off instead of an exit.
RETRYABLE = (psycopg.Error, PoolTimeout, JobQueueError, OSError)
#: SQLSTATEs that mean "try again": connection lost, server restarting, too many
#: connections, serialization failure, deadlock.
RETRYABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})


def is_transient(exc: BaseException) -> bool:
    """True when the database is not answering right now (as opposed to refusing the call)."""
    if isinstance(exc, PoolTimeout | DatabaseUnavailable | OSError | psycopg.OperationalError | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        return state.startswith("08") or state in RETRYABLE_SQLSTATES
    return False


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
