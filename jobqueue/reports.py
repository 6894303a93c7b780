"""What a running worker says every so often: the INFO summary and unhandled job types.

Every ``report_interval_s`` (``jobqueue worker --report-interval``, 60 s by default; 0
turns both off) the worker's keeper thread calls :meth:`Reporter.report`, which

* logs one INFO line, ``action=worker_summary``, with the jobs acknowledged since the last
  one: ``done``, ``failed`` (dead-lettered), ``retried``, and ``cancelled``, ``snoozed``,
  ``released``, ``lease_lost`` when there were any, and how many run now;
* looks for jobs runnable now on the worker's queues whose type neither it nor any healthy
  worker on that queue handles (one bounded read, ``unhandled_pending_types``), and logs
  each such type once per process at WARNING, ``action=unhandled_job_type``: such jobs
  would otherwise wait with no word from anyone.

Counting is one lock and a dict update per acknowledged job; the database read happens on
the keeper thread, never on the claim or acknowledgement path.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from jobqueue.config import REPORT_INTERVAL_S as REPORT_INTERVAL_S
from jobqueue.models import AckStatus
from jobqueue.sql import query

if TYPE_CHECKING:
    from jobqueue.client import JobQueue

#: Seconds between two reports of a worker (summary and unhandled types) is REPORT_INTERVAL_S
#: (in jobqueue.config, with the worker's other settings); 0: never.

#: Jobs looked at per queue, in claim order, when looking for unhandled types.
UNHANDLED_SCAN_JOBS = 1000

#: Acknowledgement status -> the summary's name for it.
_BUCKETS: dict[str, str] = {
    AckStatus.COMPLETED: "done",
    AckStatus.ALREADY_COMPLETED: "done",
    AckStatus.DEAD_LETTER: "failed",
    AckStatus.RETRYING: "retried",
    AckStatus.CANCELLED: "cancelled",
    AckStatus.SNOOZED: "snoozed",
    AckStatus.RELEASED: "released",
    AckStatus.LEASE_LOST: "lease_lost",
}
#: Always in the summary, even at 0.
_ALWAYS = ("done", "failed", "retried")

log = logging.getLogger("jobqueue.worker")


class Reporter:
    """Counts a worker's acknowledged outcomes and reports them every ``interval_s``."""

    def __init__(
        self, jq: JobQueue, worker_id: str, queues: tuple[str, ...], types: list[str], interval_s: float
    ) -> None:
        self.jq = jq
        self.worker_id = worker_id
        self.queues = list(queues)
        self.types = list(types)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._since = time.monotonic()
        self._next = self._since + interval_s
        #: Types already reported as unhandled (once per type per process).
        self.warned: set[str] = set()

    def count(self, status: str) -> None:
        """One acknowledged job and what the database said to it."""
        bucket = _BUCKETS.get(status)
        if bucket is not None:
            with self._lock:
                self._counts[bucket] = self._counts.get(bucket, 0) + 1

    def due(self, now: float) -> bool:
        return self.interval_s > 0 and now >= self._next

    def report(self, running: int) -> None:
        """Log the summary since the last report, then look for unhandled job types."""
        now = time.monotonic()
        with self._lock:
            counts, self._counts = self._counts, {}
            elapsed, self._since = now - self._since, now
        self._next = now + self.interval_s
        fields: dict[str, Any] = {name: counts.get(name, 0) for name in _ALWAYS}
        fields.update({name: n for name, n in sorted(counts.items()) if name not in _ALWAYS})
        log.info(
            f"last {elapsed:.0f}s: {fields['done']} done, {fields['failed']} failed, {fields['retried']} retried",
            extra={
                "action": "worker_summary",
                "worker_id": self.worker_id,
                "interval_s": round(elapsed, 1),
                **fields,
                "running": running,
            },
        )
        self.check_unhandled()

    def check_unhandled(self) -> None:
        """WARNING, once per type, for runnable jobs on our queues that no healthy worker handles."""
        try:
            with self.jq.pool.connection() as conn:
                rows = conn.execute(
                    query("unhandled_pending_types"),
                    {"queues": self.queues, "types": self.types, "scan": UNHANDLED_SCAN_JOBS},
                ).fetchall()
        except Exception as exc:  # a report must never stop the keeper: the database may be away
            log.debug(
                "unhandled job types: check failed",
                extra={"action": "db_error", "step": "unhandled_pending_types", "error": str(exc).strip()[:200]},
            )
            return
        for row in rows:
            job_type = str(row["type"])
            if job_type in self.warned:
                continue
            self.warned.add(job_type)
            queues = ",".join(row["queues"])
            log.warning(
                f"jobs of type {job_type!r} are pending on queue {queues} and no running worker handles "
                f"that type; start a worker whose --app registers it",
                extra={
                    "action": "unhandled_job_type",
                    "worker_id": self.worker_id,
                    "job_type": job_type,
                    "queue": queues,
                    "pending": int(row["pending"]),
                },
            )
