"""What a handler's run becomes: its result or failure, as the fields of an acknowledgement.

The worker turns a handler's return value into ``complete``'s output (JSON) and an
exception into ``fail``'s error text and class; every log line about a job carries
:func:`job_extra` (its id, type, queue, attempt and token, never its payload).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from jobqueue.models import ClaimedJob, ErrorClass

ERROR_TEXT_MAX = 2000


class Success:
    """A handler's return value (None is a value too)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class NoHandler(Exception):
    """No handler is registered for the job's type in this worker."""


def fail_params(
    error: str, error_class: ErrorClass, *, retry_in: timedelta | None = None, traceback: str | None = None
) -> dict[str, Any]:
    return {"error": error, "error_class": error_class.value, "retry_in": retry_in, "traceback": traceback}


def output_json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, allow_nan=False, default=str)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:ERROR_TEXT_MAX]


def job_extra(job: ClaimedJob, action: str, **more: Any) -> dict[str, Any]:
    return {
        "action": action,
        "job_id": job.id,
        "job_type": job.type,
        "queue": job.queue,
        "attempt": job.attempt,
        "token": job.token,
        **more,
    }
