"""OPS-02: sample ``pg_stat_activity`` while workers run, and what a queue operator alerts on.

:class:`ActivitySampler` polls every ``interval`` seconds (100 ms by default) from its own
connection and keeps, for the worker sessions (``application_name`` starting with a prefix,
plus the workers' LISTEN sessions), the longest ``idle in transaction`` spell and the
longest *client-held* transaction: how long a transaction has been open while the client
was not inside one statement of it (``idle in transaction``: now - xact_start; ``active``:
query_start - xact_start, the time it was open before its current statement began). A
worker that kept a transaction open while a handler runs shows up there, however short its
statements; a single slow statement (a claim waiting on a busy server) does not, and is
reported apart as the longest statement.

The metric RELIABILITY.md 2.2 asks an operator to alert on, the age of the oldest snapshot or
transaction id that holds back vacuum, is the product's own: ``jobqueue.health()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

WORKER_SESSIONS = """
SELECT pid, application_name AS app, state,
       extract(epoch FROM clock_timestamp() - xact_start)::float8 AS xact_age_s,
       extract(epoch FROM clock_timestamp() - state_change)::float8 AS state_age_s,
       extract(epoch FROM clock_timestamp() - query_start)::float8 AS query_age_s,
       extract(epoch FROM query_start - xact_start)::float8 AS xact_before_query_s
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND (application_name LIKE %(prefix)s OR application_name LIKE 'jobqueue-listen:%%')
"""


@dataclass
class ActivityReport:
    samples: int = 0
    #: Worker backends seen (pid -> application_name).
    sessions: dict[int, str] = field(default_factory=dict)
    max_idle_in_tx_s: float = 0.0
    #: Longest time a transaction was open outside its current statement (see above).
    max_held_xact_s: float = 0.0
    #: Longest worker statement seen running (not a held transaction; a figure only).
    max_statement_s: float = 0.0
    #: (pid, app, state, seconds) of every sample over the limits.
    idle_in_tx_over: list[tuple[int, str, float]] = field(default_factory=list)
    xact_over: list[tuple[int, str, str, float]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "worker_sessions_seen": len(self.sessions),
            "max_idle_in_tx_s": round(self.max_idle_in_tx_s, 3),
            "max_held_xact_s": round(self.max_held_xact_s, 3),
            "max_statement_s": round(self.max_statement_s, 3),
            "idle_in_tx_over_limit_samples": len(self.idle_in_tx_over),
            "xact_over_limit_samples": len(self.xact_over),
        }


class ActivitySampler:
    """Samples worker sessions every ``interval`` s until stopped (a context manager)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        interval: float = 0.1,
        idle_in_tx_limit_s: float = 1.0,
        xact_limit_s: float = 1.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.interval = interval
        self.idle_in_tx_limit_s = idle_in_tx_limit_s
        self.xact_limit_s = xact_limit_s
        self.report = ActivityReport()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity-sampler", daemon=True)

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="ops02-sampler") as conn:
            cur = conn.cursor(row_factory=dict_row)
            while not self._stop.wait(self.interval):
                try:
                    rows = cur.execute(WORKER_SESSIONS, {"prefix": self.prefix + "%"}).fetchall()
                except psycopg.Error as exc:  # recorded, never silently swallowed
                    self.errors.append(str(exc))
                    continue
                self._sample(rows)

    def _sample(self, rows: list[dict[str, Any]]) -> None:
        r = self.report
        r.samples += 1
        for row in rows:
            r.sessions[row["pid"]] = row["app"]
            state = row["state"] or ""  # NULL for a backend that is not a client session
            if state in ("idle in transaction", "idle in transaction (aborted)"):
                age = float(row["state_age_s"] or 0)
                r.max_idle_in_tx_s = max(r.max_idle_in_tx_s, age)
                if age > self.idle_in_tx_limit_s:
                    r.idle_in_tx_over.append((row["pid"], row["app"], age))
            if row["xact_age_s"] is None:
                continue
            if state == "active":
                held = max(0.0, float(row["xact_before_query_s"] or 0))
                r.max_statement_s = max(r.max_statement_s, float(row["query_age_s"] or 0))
            elif state.startswith("idle in transaction"):
                held = float(row["xact_age_s"])
            else:  # "idle" with a transaction: the server's own (e.g. reading notifications)
                continue
            r.max_held_xact_s = max(r.max_held_xact_s, held)
            if held > self.xact_limit_s:
                r.xact_over.append((row["pid"], row["app"], row["state"], held))
