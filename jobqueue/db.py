"""Connections, and the one place where driver errors become jobqueue errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from jobqueue.config import CONNECT_TIMEOUT_S, DatabaseTarget
from jobqueue.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidInput,
    JobNotFound,
    JobQueueError,
    PermissionDenied,
    QueueFull,
    RateLimited,
    SchemaOutOfDate,
)

#: The schema version (``jobqueue.schema_version()``) this package needs: 2 from revision
#: 0004 (jobqueue.health()), 3 from revision 0005 (output caps and the queue setting
#: max_output_bytes, per-tenant worker ids), 4 from revision 0007 (schedules: sync_schedules,
#: set_schedule), 5 from revisions 0009 (alerts) and 0011 (API tokens, jobqueue_viewer, jobqueue_web),
#: 6 from revision 0015 (jobqueue_operator, queue changes in job_events: jobqueue serve), 7 from
#: revision 0017 (enqueue_as_token: jobqueue serve's POST /jobs in one statement).
REQUIRED_SCHEMA_VERSION = 7

#: SQLSTATE -> error class, for errors raised by the SQL API.
_SQLSTATE_ERRORS: dict[str, type[JobQueueError]] = {
    "22023": InvalidInput,  # invalid_parameter_value: the message names the field
    "22001": InvalidInput,  # string_data_right_truncation
    "22P02": InvalidInput,  # invalid_text_representation (bad JSON, bad number)
    "22P05": InvalidInput,  # untranslatable_character (\u0000 in JSON)
    "22007": InvalidInput,  # invalid_datetime_format
    "22008": InvalidInput,  # datetime_field_overflow
    "22003": InvalidInput,  # numeric_value_out_of_range
    "23514": InvalidInput,  # check_violation
    "53400": QueueFull,
    "JQ429": RateLimited,  # jobqueue's own: the tenant's enqueue token bucket is empty
    "55000": ConfigurationError,  # object_not_in_prerequisite_state: e.g. multi-tenant mode on a superuser-owned schema
    "P0002": JobNotFound,
    "42501": PermissionDenied,
}


def connect(target: DatabaseTarget, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection; an unreachable server becomes DatabaseUnavailable naming the URL."""
    try:
        return psycopg.connect(
            target.url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            row_factory=dict_row,
            **{**target.connect_kwargs(), **kwargs},
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"could not connect to {target.display}: {_reason(exc)}") from exc


def translate(exc: psycopg.Error) -> JobQueueError:
    """The jobqueue error for a driver error (DatabaseUnavailable for lost connections,
    SchemaOutOfDate for a statement naming a jobqueue object the database lacks)."""
    state = exc.sqlstate or ""
    cls = _SQLSTATE_ERRORS.get(state)
    message = _reason(exc)
    if missing_schema_object(exc):
        return SchemaOutOfDate(f"{message}: the jobqueue schema is missing or out of date; run `jobqueue migrate`")
    if cls is InvalidInput:
        return InvalidInput(message, field=exc.diag.column_name)
    if cls is not None:
        return cls(message)
    if isinstance(exc, psycopg.OperationalError) or state.startswith("08") or state in _RECONNECTABLE:
        return DatabaseUnavailable(message)
    return JobQueueError(message)


@contextmanager
def translated() -> Iterator[None]:
    """Run a block, turning psycopg errors into jobqueue errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


#: SQLSTATEs of a statement naming something the database lacks: a schema
#: (invalid_schema_name), a function (undefined_function), a table or view (undefined_table).
_MISSING_OBJECT = frozenset({"3F000", "42883", "42P01"})


def missing_schema_object(exc: psycopg.Error) -> bool:
    """True when the error names a jobqueue object the database lacks: not migrated, or older."""
    return (exc.sqlstate or "") in _MISSING_OBJECT and "jobqueue" in (exc.diag.message_primary or "")


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The installed ``jobqueue.schema_version()``, or None when there is no jobqueue schema."""
    present = scalar(conn, "SELECT to_regprocedure('jobqueue.schema_version()') IS NOT NULL")
    return int(scalar(conn, "SELECT jobqueue.schema_version()")) if present else None


def server_version(conn: psycopg.Connection[Any]) -> str:
    return str(scalar(conn, "SELECT current_setting('server_version')"))


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    """The first column of the first row (None when there is no row), whatever the row factory."""
    with translated():
        row = conn.cursor(row_factory=tuple_row).execute(query, params).fetchone()
    return None if row is None else row[0]


def check_schema(conn: psycopg.Connection[Any], target: DatabaseTarget) -> int:
    """Return the schema version; raise SchemaOutOfDate when it is missing or too old.

    The one place that says "run `jobqueue migrate`": the CLI calls it before every verb,
    the worker at start, the library when a statement meets a missing jobqueue object.
    """
    version = schema_version(conn)
    if version is None:
        raise SchemaOutOfDate(f"{target.display} has no jobqueue schema; run `jobqueue migrate`")
    if version < REQUIRED_SCHEMA_VERSION:
        raise SchemaOutOfDate(
            f"{target.display} has jobqueue schema version {version}, this version needs "
            f"{REQUIRED_SCHEMA_VERSION}; run `jobqueue migrate`"
        )
    return version


#: Server shutting down, crash recovery, too many connections: retry after reconnecting.
_RECONNECTABLE = frozenset({"57P01", "57P02", "57P03", "53300"})


def _reason(exc: BaseException) -> str:
    """libpq's message, first line, without the 'connection to server at ... failed:' noise."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[0]
    if "failed: " in line:
        line = line.rsplit("failed: ", 1)[1]
    return line
