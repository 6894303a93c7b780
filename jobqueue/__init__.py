"""jobqueue: a job queue whose whole state lives in PostgreSQL.

from jobqueue import JobQueue

jq = JobQueue()                      # $JOBQUEUE_DATABASE_URL, $DATABASE_URL or embedded

@jq.task(queue="email", max_attempts=5)
def send_email(to: str, subject: str) -> None: ...

send_email.enqueue(to="a@example.com", subject="hi")
jq.run_worker(queues=("email",))
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
