"""Rows as frozen dataclasses, and the vocabularies the SQL API uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any


class JobState(StrEnum):
    """A job's state; the SQL enum ``jobqueue.job_state`` has the same members."""

    PENDING = "pending"  # enqueue, retry/redrive, release: waiting for its run time and a worker
    PROCESSING = "processing"  # claim: leased to a worker until its lease expires
    RETRYING = "retrying"  # fail (retryable) or an expired lease: waiting for its retry time
    COMPLETED = "completed"  # complete: finished successfully (kept in history until retention)
    DEAD_LETTER = "dead_letter"  # fail for good, attempts exhausted, expired: in the dead-letter queue
    CANCELLED = "cancelled"  # cancel, a cancelled dependency: will not run
    ARCHIVED = "archived"  # a dead letter past its queue's dead_letter_max_age_days


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD_LETTER, JobState.CANCELLED, JobState.ARCHIVED})


class Priority(IntEnum):
    """Named priorities; higher runs first. Any integer 0..10 is accepted too."""

    LOW = 0
    NORMAL = 5
    HIGH = 8
    CRITICAL = 10


class ErrorClass(StrEnum):
    """How a failed attempt is retried (see docs/sql-api.md for the policy)."""

    TRANSIENT = "transient"  # retry per policy
    TIMEOUT = "timeout"  # retry with a longer delay
    SYSTEM = "system"  # retry, with a larger attempt budget
    VALIDATION = "validation"  # dead-letter at once
    BUSINESS = "business"  # dead-letter at once
    PERMANENT = "permanent"  # dead-letter at once
    CANCELLED = "cancelled"  # the job was cancelled while it ran


class AckStatus(StrEnum):
    """What the database said to an acknowledgement."""

    COMPLETED = "completed"
    ALREADY_COMPLETED = "already_completed"
    RETRYING = "retrying"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"
    SNOOZED = "snoozed"
    RELEASED = "released"
    OK = "ok"
    LEASE_LOST = "lease_lost"
    #: complete refused the output (over the queue's max_output_bytes): the job is a dead letter
    OUTPUT_TOO_LARGE = "output_too_large"


@dataclass(frozen=True)
class ClaimedJob:
    """A job leased to this worker: the row ``jobqueue.claim()`` returned."""

    id: int
    token: int
    queue: str
    type: str
    payload: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    timeout: timedelta | None
    lease_expires_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The lease this claim granted (lease_expires_at - claimed_at, by the database clock).
    lease_duration: timedelta | None = None

    @classmethod
    def from_tuple(cls, row: tuple[Any, ...]) -> ClaimedJob:
        """From a claim() row as a tuple, in claim()'s column order (the worker's hot path)."""
        id, token, queue, type, payload, priority, attempt, max_attempts, timeout, expires, metadata, lease = row
        return cls(
            id,
            token,
            queue,
            type,
            payload or {},
            priority,
            attempt,
            max_attempts,
            timeout,
            expires,
            metadata or {},
            lease,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClaimedJob:
        return cls(
            id=row["id"],
            token=row["token"],
            queue=row["queue"],
            type=row["type"],
            payload=row["payload"] or {},
            priority=row["priority"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            timeout=row["timeout"],
            lease_expires_at=row["lease_expires_at"],
            metadata=row["metadata"] or {},
            lease_duration=row.get("lease_duration"),
        )


@dataclass(frozen=True)
class Job:
    """A job in any state, as the ``jobqueue.jobs`` view shows it."""

    id: int
    state: JobState
    queue: str
    type: str
    row: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        return cls(id=row["id"], state=JobState(row["state"]), queue=row["queue"], type=row["type"], row=row)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.row)
