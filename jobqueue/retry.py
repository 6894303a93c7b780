"""Handler outcomes: control-flow exceptions, and exceptions -> error classes (pure functions).

The retry *schedule* is computed in SQL (``jobqueue.retry_delay``) so a worker in any
language gets the same one; Python only decides the error class, or a delay when a task
brings its own callable policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import timedelta

from jobqueue.models import ErrorClass

#: HTTP status codes: these are worth retrying; the other 4xx are not.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 410, 413, 415, 422})

#: The default table; for an exception, the nearest class in its MRO decides (see classify()).
DEFAULT_ERROR_CLASSES: Mapping[type[BaseException], ErrorClass] = {
    TimeoutError: ErrorClass.TIMEOUT,
    ConnectionError: ErrorClass.TRANSIENT,
    OSError: ErrorClass.SYSTEM,
    MemoryError: ErrorClass.SYSTEM,
    json.JSONDecodeError: ErrorClass.VALIDATION,
    ValueError: ErrorClass.VALIDATION,
    TypeError: ErrorClass.VALIDATION,
    KeyError: ErrorClass.VALIDATION,
    PermissionError: ErrorClass.PERMANENT,
    NotImplementedError: ErrorClass.PERMANENT,
}


class HandlerSignal(Exception):
    """Base of the exceptions a handler raises to steer its job (not failures)."""


class Retry(HandlerSignal):
    """Retry this job after ``after`` (seconds or timedelta; None: per the retry policy)."""

    def __init__(self, after: float | timedelta | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.after = as_timedelta(after)
        self.reason = reason


class Snooze(HandlerSignal):
    """Put the job back for ``delay`` without using an attempt."""

    def __init__(self, delay: float | timedelta) -> None:
        super().__init__(f"snoozed for {delay}")
        delay_td = as_timedelta(delay)
        assert delay_td is not None
        self.delay = delay_td


class Cancel(HandlerSignal):
    """Stop this job for good: it ends ``cancelled`` with ``reason``."""

    def __init__(self, reason: str = "cancelled by handler") -> None:
        super().__init__(reason)
        self.reason = reason


class Shutdown(BaseException):
    """Raised inside async handlers when the worker stops; not an ``Exception`` on purpose."""


def classify(exc: BaseException, table: Mapping[type[BaseException], ErrorClass | str] | None = None) -> ErrorClass:
    """The error class of an exception.

    In order: an ``error_class`` attribute on the exception; an HTTP-style status code
    (``status_code``, ``status`` or ``response.status_code``: 408/425/429/5xx transient,
    other 4xx permanent); the nearest class in the exception's MRO found in ``table``
    (user entries, then DEFAULT_ERROR_CLASSES); else transient.
    """
    explicit = getattr(exc, "error_class", None)
    if explicit is not None:
        return ErrorClass(str(explicit))
    status = http_status(exc)
    if status is not None:
        if status in TRANSIENT_STATUSES or status >= 500:
            return ErrorClass.TRANSIENT
        if status in PERMANENT_STATUSES or 400 <= status < 500:
            return ErrorClass.PERMANENT
    merged: dict[type[BaseException], ErrorClass] = dict(DEFAULT_ERROR_CLASSES)
    for cls, value in (table or {}).items():
        merged[cls] = ErrorClass(value)
    for cls in type(exc).__mro__:
        if cls in merged:
            return merged[cls]
    return ErrorClass.TRANSIENT


def http_status(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


#: A task's own retry policy: (attempt, exception) -> delay, or None for the SQL policy.
RetryCallable = Callable[[int, BaseException], float | timedelta | None]


def as_timedelta(value: float | int | timedelta | None) -> timedelta | None:
    """Seconds or a timedelta as a timedelta (None stays None)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected seconds or a timedelta, got {type(value).__name__}")
    return timedelta(seconds=value)
