"""The connection pool a :class:`~jobqueue.client.JobQueue` draws from.

psycopg_pool's ``ConnectionPool`` with two repairs that outages showed were needed
(docs/guarantees.md, CHAOS-03): a reconnection back-off capped at a couple of seconds
(:class:`ReconnectAttempt`), and an idle pool whose connections all died is checked all at
once instead of one connection per doubling pause (:class:`Pool`). Connections idle only
briefly are used without a ping (:func:`check_if_idle`).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

#: Keep trying to reconnect for as long as the process lives: a queue must outlast outages.
POOL_RECONNECT_TIMEOUT_S = 365 * 24 * 3600.0
#: Longest wait between two attempts to replace a lost pooled connection. psycopg_pool's own
#: back-off doubles without bound (1, 2, 4, 8, 16 s ...): after a 10 s outage its next
#: attempt came 15 s later, after 20 s 31 s later, and every caller waited for it.
POOL_RECONNECT_MAX_DELAY_S = 2.0
#: A pooled connection idle for longer than this is checked (an empty query) before use;
#: one returned more recently was working a moment ago and is used at once. Checking every
#: checkout costs a round trip and a transaction per enqueue, claim and acknowledgement.
POOL_CHECK_IDLE_S = 5.0


class ReconnectAttempt(AttemptWithBackoff):
    """psycopg_pool's reconnection back-off, capped at POOL_RECONNECT_MAX_DELAY_S.

    Delays: 1 s (± 10 %), doubling, then a random wait in [cap / 2, cap] for as long as the
    server stays away, so a fleet of workers comes back within ~cap seconds of the server
    without knocking on it in step."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        if self.delay > POOL_RECONNECT_MAX_DELAY_S:
            self.delay = POOL_RECONNECT_MAX_DELAY_S * (0.5 + random.random() / 2)


class Pool(ConnectionPool[psycopg.Connection[dict[str, Any]]]):
    """A psycopg_pool with a capped reconnection back-off (:class:`ReconnectAttempt`) that
    notes when each connection came back, for :func:`check_if_idle`. (A pool ``reset``
    hook would do that too, but makes psycopg_pool return every connection through a worker
    thread: a thread hand-off per enqueue.)

    When one idle connection fails its check, the others most likely died with it (a server
    restart, a failover): all of them are checked at once, on a thread of their own, instead
    of being met one by one, each behind psycopg_pool's doubling pause (1, 2, 4, 8 ... s),
    which made the first call of an idle pool of six time out after a restart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sweeping = threading.Lock()
        super().__init__(*args, check=self._check_idle, **kwargs)

    def _check_idle(self, conn: psycopg.Connection[Any]) -> None:
        try:
            check_if_idle(conn)
        except Exception:
            if self._sweeping.acquire(blocking=False):
                threading.Thread(target=self._sweep, name="jobqueue-pool-sweep", daemon=True).start()
            raise

    def _sweep(self) -> None:
        try:
            self.check()  # takes every idle connection out at once; replaces the broken ones
        except Exception:  # the pool closed meanwhile: nothing to sweep
            pass
        finally:
            self._sweeping.release()

    def putconn(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        conn._jobqueue_idle_since = time.monotonic()  # type: ignore[attr-defined]
        super().putconn(conn)

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # The first failure of a replacement starts the back-off; psycopg_pool hands the
        # same attempt object on to each rescheduled try, so the cap holds for all of them.
        super()._add_connection(attempt or ReconnectAttempt(timeout=self.reconnect_timeout), growing)


def check_if_idle(conn: psycopg.Connection[Any]) -> None:
    """Pool check hook: a closed connection fails at once; a long-idle one is pinged."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the pooled connection is closed")
    since = getattr(conn, "_jobqueue_idle_since", None)
    if since is None or time.monotonic() - since > POOL_CHECK_IDLE_S:
        ConnectionPool.check_connection(conn)
