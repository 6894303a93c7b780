"""Errors as RFC 9457 ``application/problem+json``: a status, a title, the detail (the SQL
API's own message, which starts with the field) and the ``field`` it names."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

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

PROBLEM_JSON = "application/problem+json"
#: Largest request body the server reads (413 past it): a job's payload may be 1 MiB (the SQL
#: API's hard cap), plus the envelope.
MAX_BODY_BYTES = 1_048_576 + 65_536

#: jobqueue error class -> HTTP status.
_STATUS: tuple[tuple[type[JobQueueError], int], ...] = (
    (InvalidInput, 422),
    (JobNotFound, 404),
    (PermissionDenied, 403),
    (QueueFull, 503),
    (RateLimited, 429),
    (SchemaOutOfDate, 503),
    (DatabaseUnavailable, 503),
    (ConfigurationError, 409),
)


class Problem(Exception):
    """An HTTP error with a problem+json body. ``field`` names the input at fault."""

    def __init__(
        self, status: int, detail: str, *, field: str | None = None, title: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.title = title
        self.extra = extra
        self.headers: dict[str, str] = {}


def problem_response(
    status: int, detail: str, *, field: str | None = None, title: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title or _title(status), "status": status, "detail": detail}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def error_response(exc: Problem | JobQueueError) -> JSONResponse:
    """The problem+json answer to a Problem or a jobqueue error (the app's handlers, and the
    routes that answer outside them: fastpost.py)."""
    if isinstance(exc, Problem):
        response = problem_response(exc.status, exc.detail, field=exc.field, title=exc.title, **exc.extra)
        response.headers.update(exc.headers)
        return response
    field = exc.field if isinstance(exc, InvalidInput) else _field_of(str(exc))
    if field is None and isinstance(exc, JobNotFound):
        field = "id"  # the library's "job 8 not found", or a row-level security "not found"
    elif field is None and isinstance(exc, PermissionDenied):
        field = "token"  # the grants of the token's role refuse it ("permission denied for ...")
    return problem_response(status_of(exc), str(exc), field=field)


def too_large_response(max_bytes: int) -> JSONResponse:
    """413: the body is over the server's limit (app.BodySizeLimit, fastpost.FastPost)."""
    return problem_response(413, f"body: larger than {max_bytes} bytes", field="body", max_bytes=max_bytes)


def status_of(error: JobQueueError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return error_response(exc)

    async def on_jobqueue_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, JobQueueError)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        verify = getattr(request.state, "jobqueue_verify", None)
        if verify is not None:  # a route that verifies its token with its statement: do it now
            try:
                await run_in_threadpool(verify)
            except Problem as refused:
                return await on_problem(request, refused)
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = _field_path(first.get("loc", ()))
        message = str(first.get("msg", "invalid"))
        if first.get("type") == "json_invalid":
            field, message = "body", "malformed JSON: " + str(first.get("ctx", {}).get("error", message))
        # (a malformed body's location is a character position, not a field)
        invalid = [{"field": _error_field(e), "message": str(e.get("msg"))} for e in errors]
        return problem_response(422, f"{field}: {message}", field=field, invalid_params=invalid)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        response = problem_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(JobQueueError, on_jobqueue_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def _error_field(error: Any) -> str:
    return "body" if error.get("type") == "json_invalid" else _field_path(error.get("loc", ()))


def _field_path(loc: Any) -> str:
    """pydantic's location without its "body"/"query"/"path" prefix: ``filter.queue``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header"):
        parts = [p for p in parts[1:] if not p.isdigit()]  # a repeated parameter: its name
    elif parts and parts[0] == "body":
        parts = parts[1:]
    # a union's member ("priority.int", "priority.str") or a validator's tag is not a field
    parts = [p for p in parts if not _TYPE_TAG.fullmatch(p)]
    return ".".join(parts) or "body"


#: What pydantic adds to a location for a union's members and wrapped validators.
_TYPE_TAG = re.compile(r"int|str|float|bool|bytes|none|(dict|list|set|tuple|literal)\[.*\]|[a-z]+-[a-z-]+\[.*\]")


def _field_of(message: str) -> str | None:
    """The SQL API's messages start with the field: ``id: no job 7``."""
    head, sep, _ = message.partition(":")
    return head if sep and head and " " not in head and len(head) <= 64 else None


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
