"""One exception root; one class per failure a user can act on.

A subclass's docstring is also its default message. Driver errors are translated into
these at one boundary (``jobqueue.db``), so callers never catch psycopg exceptions.
"""

from __future__ import annotations


class JobQueueError(Exception):
    """jobqueue failed."""

    #: Process exit code the CLI uses for this error (sysexits.h style).
    exit_code: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(JobQueueError):
    """The configuration is not valid."""

    exit_code = 78  # EX_CONFIG


class DatabaseUnavailable(JobQueueError):
    """The database cannot be reached."""

    exit_code = 69  # EX_UNAVAILABLE


class EmbeddedServerError(DatabaseUnavailable):
    """No database configured and the embedded server failed to start."""


class SchemaOutOfDate(JobQueueError):
    """The database schema is older than this version of jobqueue needs; run `jobqueue migrate`."""

    exit_code = 75  # EX_TEMPFAIL: fixable by the operator, then retry


class InvalidInput(JobQueueError):
    """An argument is not valid."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        #: The name of the offending field or parameter, when known.
        self.field = field


class QueueFull(JobQueueError):
    """The queue's backlog is at its configured maximum size."""

    exit_code = 75


class RateLimited(JobQueueError):
    """The tenant is over its enqueue rate limit; nothing was enqueued, retry later."""

    exit_code = 75


class JobNotFound(JobQueueError):
    """No job has that id."""

    exit_code = 66  # EX_NOINPUT


class PermissionDenied(JobQueueError):
    """The database role may not do this."""

    exit_code = 77  # EX_NOPERM
