"""Periodic schedules from Python: declarations in code, and methods that mirror the SQL API.

A schedule lives in the database and is fired by ``jobqueue.reconcile()`` (docs/sql-api.md
"Periodic schedules"). Code declares schedules with ``@jq.task(..., schedule="*/5 * * * *")``
or ``jq.periodic(...)``; a worker sends its app's declarations to ``sync_schedules`` when it
starts, which creates or replaces them and pauses (never deletes) the ones the app declared
before but no longer does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobqueue.errors import InvalidInput
from jobqueue.sql import Rows, StatementRunner

log = logging.getLogger("jobqueue.schedules")

MISSED_POLICIES = ("skip", "latest", "all")
#: Keys of a job template (enqueue's, less run_at and delay: each job runs at its tick).
TEMPLATE_KEYS = frozenset(
    {
        "type",
        "payload",
        "queue",
        "priority",
        "max_attempts",
        "retry_policy",
        "unique_key",
        "tags",
        "metadata",
        "timeout",
        "visibility_timeout",
    }
)


@dataclass(frozen=True)
class Periodic:
    """A schedule declared in code (sent to the database by ``sync_schedules``)."""

    name: str
    cron: str
    job: Mapping[str, Any]
    tz: str = "UTC"
    missed: str = "skip"
    max_backfill: int = 100

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cron": self.cron,
            "job": dict(self.job),
            "tz": self.tz,
            "missed": self.missed,
            "max_backfill": self.max_backfill,
        }


def template(type: str, payload: Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """A job template: enqueue's keys, durations as seconds (JSON numbers)."""
    unknown = sorted(set(options) - TEMPLATE_KEYS)
    if unknown:
        raise InvalidInput(f"job.{unknown[0]}: not a job template option", field=f"job.{unknown[0]}")
    job: dict[str, Any] = {"type": type}
    if payload is not None:
        job["payload"] = dict(payload)
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, timedelta):
            value = value.total_seconds()
        job[key] = value
    return job


class ScheduleMethods(StatementRunner):
    """Mixed into JobQueue: declarations and the schedule API (see docs/tasks.md)."""

    application_name: str

    @property
    def declared_schedules(self) -> dict[str, Periodic]:
        """Schedules declared in this process's code, by name."""
        found: dict[str, Periodic] | None = self.__dict__.get("_declared_schedules")
        if found is None:
            found = {}
            self.__dict__["_declared_schedules"] = found
        return found

    def periodic(
        self,
        name: str,
        cron: str,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        tz: str = "UTC",
        missed: str = "skip",
        max_backfill: int = 100,
        **job_options: Any,
    ) -> Periodic:
        """Declare a schedule: ``jq.periodic("nightly", "0 3 * * *", "cleanup", tz="Europe/Berlin")``.

        Workers create it in the database when they start (``sync_schedules``); the cron
        expression and the rest are checked there, by the same SQL as ``set_schedule``.
        """
        if missed not in MISSED_POLICIES:
            raise InvalidInput("missed: must be one of skip, latest, all", field="missed")
        declared = Periodic(name, cron, template(type, payload, **job_options), tz, missed, max_backfill)
        existing = self.declared_schedules.get(name)
        if existing is not None and existing != declared:
            raise InvalidInput(f"name: two different schedules are declared as {name!r}", field="name")
        self.declared_schedules[name] = declared
        return declared

    def sync_schedules(self, app: str | None = None) -> dict[str, list[str]]:
        """Send this code's declared schedules to the database for ``app`` (default: the
        application name): created or replaced; the ones ``app`` declared before and no
        longer does are paused, each with a log line."""
        owner = app or self.application_name
        documents = [p.document() for p in sorted(self.declared_schedules.values(), key=lambda p: p.name)]
        rows = self._fetch("sync_schedules", {"app": owner, "schedules": json.dumps(documents)})
        result: dict[str, list[str]] = dict(rows[0]["result"])
        for name in result.get("paused", []):
            log.warning(
                "schedule %s is no longer declared by %s: paused (not deleted; remove it with "
                "`jobqueue schedules remove %s`)",
                name,
                owner,
                name,
                extra={"action": "schedule_paused", "schedule": name, "app": owner},
            )
        for name in result.get("resumed", []):
            log.info(
                "schedule %s is declared again by %s: resumed",
                name,
                owner,
                extra={"action": "schedule_resumed", "schedule": name, "app": owner},
            )
        return result

    # -- the SQL API -------------------------------------------------------------------------

    def set_schedule(
        self,
        name: str,
        cron: str,
        job: Mapping[str, Any],
        *,
        tz: str = "UTC",
        missed: str = "skip",
        max_backfill: int = 100,
        paused: bool | None = None,
    ) -> dict[str, Any]:
        """Create or replace a schedule (``jobqueue.set_schedule``); returns it."""
        rows = self._fetch(
            "set_schedule",
            {
                "name": name,
                "cron": cron,
                "job": json.dumps(dict(job)),
                "tz": tz,
                "missed": missed,
                "max_backfill": max_backfill,
                "paused": paused,
            },
        )
        return dict(rows[0]["schedule"])

    def pause_schedule(self, name: str) -> dict[str, Any]:
        return dict(self._fetch("pause_schedule", {"name": name})[0]["schedule"])

    def resume_schedule(self, name: str) -> dict[str, Any]:
        return dict(self._fetch("resume_schedule", {"name": name})[0]["schedule"])

    def remove_schedule(self, name: str) -> bool:
        """Delete a schedule (False when there was none); the jobs it enqueued stay."""
        return bool(self._fetch("remove_schedule", {"name": name})[0]["removed"])

    def schedules(self) -> Rows:
        """Every schedule with its next and last fire time and its last job's id and state."""
        return self._fetch("list_schedules", {})

    def schedule_next(self, name: str, n: int = 5) -> list[datetime]:
        """The next ``n`` times a schedule fires."""
        return [r["at"] for r in self._fetch("schedule_next", {"name": name, "n": n})]

    def cron_next(self, expr: str, after: datetime | None = None, tz: str = "UTC", n: int = 1) -> list[datetime]:
        """The next ``n`` fire times of any cron expression after ``after`` (default: now)."""
        return [r["at"] for r in self._fetch("cron_next", {"expr": expr, "after": after, "tz": tz, "n": n})]
