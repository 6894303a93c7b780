"""jobqueue: a job queue whose whole state lives in PostgreSQL.

from jobqueue import JobQueue

jq = JobQueue()                      # $JOBQUEUE_DATABASE_URL, $DATABASE_URL or embedded

@jq.task(queue="email", max_attempts=5)
def send_email(to: str, subject: str) -> None: ...

send_email.enqueue(to="a@example.com", subject="hi")
jq.run_worker(queues=("email",))

The package reads in the order a job travels (README, Layout): the floor (config, errors,
models, sql, db, embedded, migrations), then tasks, client (enqueue), retry, listener and
worker (claim, run, acknowledge, retry or dead letter), then what operators use: logs,
exporter, mirror, and the ``jobqueue`` command in ``cli/`` (one module per verb group).
``bench/`` is measurement only: importing jobqueue never loads it, nor ``cli/``, click or
rich.

Schedules live in ``jobqueue/schedules.py`` (declared in code, synced to the database and
fired by ``jobqueue.reconcile()``; verbs in ``cli/schedules.py``). Homes decided for the
rest of the next layer (each created when it lands, never empty before): ``jobqueue/alerts/``
(alert rules and notification channels, one file per channel; verbs in ``cli/alerts.py``);
``jobqueue/web/`` (the HTTP API and dashboard, an ASGI app over this library, started by
``jobqueue web``, never imported by the runtime); flow control (concurrency and rate limits,
tenant fairness) is enforced inside the SQL claim and configured through the queue and
tenant settings in ``client.py`` and ``cli/queues.py`` / ``cli/tenants.py``.
"""

from __future__ import annotations

from jobqueue.client import JobQueue
from jobqueue.config import WorkerConfig
from jobqueue.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    EmbeddedServerError,
    InvalidInput,
    JobNotFound,
    JobQueueError,
    PermissionDenied,
    QueueFull,
    RateLimited,
    SchemaOutOfDate,
)
from jobqueue.models import ErrorClass, Job, JobState, Priority
from jobqueue.retry import Cancel, Retry, Snooze
from jobqueue.tasks import JobContext, Task, current_job

__all__ = [
    "Cancel",
    "ConfigurationError",
    "DatabaseUnavailable",
    "EmbeddedServerError",
    "ErrorClass",
    "InvalidInput",
    "Job",
    "JobContext",
    "JobNotFound",
    "JobQueue",
    "JobQueueError",
    "JobState",
    "PermissionDenied",
    "Priority",
    "QueueFull",
    "RateLimited",
    "Retry",
    "SchemaOutOfDate",
    "Snooze",
    "Task",
    "WorkerConfig",
    "current_job",
]
