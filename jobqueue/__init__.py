"""jobqueue: a job queue whose whole state lives in PostgreSQL."""

from __future__ import annotations

from jobqueue.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    EmbeddedServerError,
    InvalidInput,
    JobNotFound,
    JobQueueError,
    PermissionDenied,
    QueueFull,
    SchemaOutOfDate,
)

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "EmbeddedServerError",
    "InvalidInput",
    "JobNotFound",
    "JobQueueError",
    "PermissionDenied",
    "QueueFull",
    "SchemaOutOfDate",
]
