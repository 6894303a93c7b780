"""The app the soak and OPS tests run in real `jobqueue worker` processes.

``--app tests.support.soak_app:jq``. The pool's backends are named after ``$PGAPPNAME``
(the harness sets ``jq-worker-<name>``), so ``pg_stat_activity`` can tell worker sessions
from the test's own.

* ``soak.work``  sleeps ``ms`` milliseconds: a handler with a known duration and no I/O
* ``soak.leak``  a deliberately broken handler that holds a transaction open on one of the
                 worker's own pooled connections while it runs: the negative control that
                 proves the OPS-02 sampler sees what it is meant to catch
"""

from __future__ import annotations

import os
import time

from jobqueue import JobQueue

jq = JobQueue(pool_size=int(os.environ.get("SOAK_POOL_SIZE", "6")))


@jq.task(name="soak.work", max_attempts=50)
def work(ms: int = 0) -> None:
    if ms:
        time.sleep(ms / 1000)


@jq.task(name="soak.leak", max_attempts=1)
def leak(seconds: float) -> None:
    with jq.pool.connection() as conn, conn.transaction():
        conn.execute("SELECT txid_current()")
        time.sleep(seconds)
