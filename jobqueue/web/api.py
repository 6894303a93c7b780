"""The ``/api/v1`` routes: each one shapes a request, calls the library on the request's
database session (auth.py) and shapes the answer. No route filters rows itself: the
token's role and tenant, in the database, decide what it sees and may do (a job another
tenant owns is "not found", an action the role lacks is 403 from the database's grants).

Request bodies refuse unknown fields (422 naming the field); every error is problem+json
(problems.py). Lists are newest first, paged by an opaque ``cursor``; ``total`` is capped
(``"10,000+"``) so that a list never counts a million rows.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from jobqueue.client import JobQueue, enqueue_params
from jobqueue.db import REQUIRED_SCHEMA_VERSION, schema_version
from jobqueue.errors import JobNotFound, JobQueueError
from jobqueue.models import JobState
from jobqueue.sql import query
from jobqueue.web.auth import Session, admitted_token, client_address, db_session, web_database
from jobqueue.web.problems import Problem

health_router = APIRouter(tags=["health"])
router = APIRouter()

#: The request's database session. scope="function": the transaction commits before the response
#: is sent, so a client that got 200 reads its own write on the next request.
DbSession = Annotated[Session, Depends(db_session, scope="function")]

#: Jobs per page: default and most.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: A list's total is counted up to this many jobs, then shown as "10,000+".
TOTAL_CAP = 10_000
#: Jobs a bulk action touches at most per call (repeat the call for more).
MAX_BULK = 1000
#: Dead letters a redrive or purge touches at most per call (the SQL API's redrive cap).
MAX_DEAD_BATCH = 10_000
_CURSOR_PREFIX = "v1:"
#: Job ids are bigint: a larger one in a path or a cursor is refused naming it, not sent.
INT8_MAX = 2**63 - 1
#: A job id in a path.
JobId = Annotated[int, Path(ge=1, le=INT8_MAX)]

# -- models ----------------------------------------------------------------------------------


class Strict(BaseModel):
    """Bodies as sent: unknown fields and wrong types are refused (422 naming the field), never
    converted -- ``"dry_run": "no"`` or ``"max_attempts": true`` is an error, not a guess. Only
    times (ISO 8601 strings) and job states (their names) are read from strings."""

    model_config = ConfigDict(extra="forbid", strict=True)


#: An ISO 8601 string with its UTC offset, as JSON carries times (a time without one is
#: refused, as the SQL API and the CLI refuse it: whose clock would it be?).
Time = Annotated[AwareDatetime, Field(strict=False)]
#: A job state by its name.
State = Annotated[JobState, Field(strict=False)]


class JobCreate(Strict):
    """A job to enqueue: the SQL API's enqueue parameters."""

    type: str = Field(min_length=1, max_length=255)
    payload: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    priority: int | str | None = None
    run_at: Time | None = None
    delay: float | None = Field(default=None, ge=0, description="seconds")
    max_attempts: int | None = None
    retry_policy: dict[str, Any] | None = None
    unique_key: str | None = Field(default=None, description="or the Idempotency-Key header")
    expires_at: Time | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    depends_on: list[int] | None = None
    timeout: float | None = Field(default=None, gt=0, description="seconds")
    visibility_timeout: float | None = Field(default=None, gt=0, description="seconds")


class JobFilter(Strict):
    """Which jobs: every given field must match (the list's query parameters)."""

    state: list[State] | None = None
    queue: str | None = None
    type: str | None = None
    tag: str | None = None
    tenant_id: str | None = None
    created_by: str | None = None
    created_after: Time | None = None
    created_before: Time | None = None
    finished_after: Time | None = None
    finished_before: Time | None = None


class BulkAction(Strict):
    filter: JobFilter = Field(default_factory=JobFilter)
    dry_run: bool = False
    limit: int = Field(default=MAX_BULK, ge=1, le=MAX_BULK)
    reason: str | None = Field(default=None, max_length=1000, description="cancel only")


class DeadLetterAction(Strict):
    """The SQL API's dead-letter filter (docs/sql-api.md): queue, type, reason, tenant_id,
    error_class, ids, since, until, state."""

    filter: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=MAX_BULK, ge=1, le=MAX_DEAD_BATCH)
    dry_run: bool = False


class CancelBody(Strict):
    reason: str | None = Field(default=None, max_length=1000)


class QueueSettings(Strict):
    """Queue settings (``jobqueue queues set``); null clears one back to its default."""

    max_size: int | None = None
    visibility_timeout: float | None = Field(default=None, description="seconds")
    max_attempts: int | None = None
    retry_policy: dict[str, Any] | None = None
    dead_letter_max_age_days: int | None = None
    history_retention: float | None = Field(default=None, description="seconds")
    aging_interval: float | None = Field(default=None, description="seconds")
    max_output_bytes: int | None = None


# -- health ----------------------------------------------------------------------------------


@health_router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers (no database call)."""
    return {"status": "ok"}


@health_router.get("/readyz")
def readyz(request: Request) -> dict[str, Any]:
    """Readiness: the database answers and its schema is the version this server needs."""
    with web_database(request).connection() as conn:
        version = schema_version(conn)
    if version is None or version < REQUIRED_SCHEMA_VERSION:
        raise Problem(
            503,
            f"schema: version {version} installed, {REQUIRED_SCHEMA_VERSION} needed; run `jobqueue migrate`",
            field="schema",
        )
    return {"status": "ready", "schema_version": version}


@router.get("/whoami", tags=["auth"])
def whoami(session: DbSession) -> dict[str, Any]:
    """The token this request acts as: its role and tenant (never the token itself)."""
    p = session.principal
    return {"token_id": p.token_id, "name": p.name, "role": p.role, "tenant_id": p.tenant_id}


# -- jobs ------------------------------------------------------------------------------------


def job_filter(
    state: Annotated[list[JobState] | None, Query()] = None,
    queue: str | None = None,
    type: str | None = None,
    tag: str | None = None,
    tenant_id: str | None = None,
    created_by: str | None = None,
    created_after: AwareDatetime | None = None,
    created_before: AwareDatetime | None = None,
    finished_after: AwareDatetime | None = None,
    finished_before: AwareDatetime | None = None,
) -> JobFilter:
    return JobFilter(
        state=state,
        queue=queue,
        type=type,
        tag=tag,
        tenant_id=tenant_id,
        created_by=created_by,
        created_after=created_after,
        created_before=created_before,
        finished_after=finished_after,
        finished_before=finished_before,
    )


def _filters(f: JobFilter) -> dict[str, Any]:
    given = f.model_dump(exclude={"state"})
    given["states"] = [s.value for s in f.state] if f.state else None
    return given


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        value = int(text[len(_CURSOR_PREFIX) :])
        if not 1 <= value <= INT8_MAX:
            raise ValueError(value)
        return value
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Problem(
            422, "cursor: not a cursor this API returned (use next_cursor as given)", field="cursor"
        ) from None


def _job(row: Any) -> dict[str, Any]:
    return {k: plain(v) for k, v in (row.as_dict() if hasattr(row, "as_dict") else row).items()}


def plain(value: Any) -> Any:
    """JSON numbers for NUMERIC columns (progress), which pydantic would write as strings."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@router.post("/jobs", status_code=201, tags=["jobs"])
def create_job(
    token: Annotated[str, Depends(admitted_token)],
    body: JobCreate,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    """Enqueue a job. ``Idempotency-Key`` (or ``unique_key``): while a job with that key is
    live, the same key returns that job's id instead of a new job."""
    # The plain request never gets here: fastpost.py answers it in front of FastAPI (same
    # pipeline, on the event loop) and hands every other one to this route, which the
    # OpenAPI document describes. Here too no DbSession: the token is verified, the role and
    # tenant taken on and the job enqueued in one transaction sent as one pipeline (one
    # round trip: WebDatabase.run_as), committed before the response is sent. A bad token
    # with a bad body still gets 401 (admitted_token, problems.on_validation).
    try:
        params = _enqueue_params(body, idempotency_key)
    except (Problem, JobQueueError):
        request.state.jobqueue_verify()  # 401 first for a bad token, as for any other route
        raise
    rows = web_database(request).run_as(token, query("enqueue"), params, client=client_address(request))
    job_id = int(rows[0][0])
    # the response as it is (FastAPI sends a Response unvalidated: one dict needs no model)
    return JSONResponse({"id": job_id}, status_code=201, headers={"Location": f"/api/v1/jobs/{job_id}"})  # type: ignore[return-value]


def _enqueue_params(body: JobCreate, idempotency_key: str | None) -> dict[str, Any]:
    """The library's enqueue parameters for a create request (422 naming the field)."""
    if idempotency_key is not None and body.unique_key is not None and idempotency_key != body.unique_key:
        raise Problem(422, "unique_key: differs from the Idempotency-Key header; send one", field="unique_key")
    options = body.model_dump(exclude={"type", "payload"}, exclude_none=True)
    if idempotency_key is not None:
        options["unique_key"] = idempotency_key
    for name in ("delay", "timeout", "visibility_timeout"):
        if name in options:
            options[name] = timedelta(seconds=options[name])
    return enqueue_params(body.type, body.payload, options)


@router.get("/jobs", tags=["jobs"])
def list_jobs(
    session: DbSession,
    f: Annotated[JobFilter, Depends(job_filter)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    cursor: str | None = None,
    total: bool = True,
) -> dict[str, Any]:
    """Jobs newest first. ``next_cursor`` (null on the last page) fetches the next page;
    ``total`` counts at most 10,000 (``total_display`` "10,000+" beyond)."""
    filters = _filters(f)
    before_id = decode_cursor(cursor) if cursor is not None else None
    jobs = session.queue.list(**filters, before_id=before_id, limit=limit)
    items = [_job(j) for j in jobs]
    page: dict[str, Any] = {
        "items": items,
        "next_cursor": encode_cursor(items[-1]["id"]) if len(items) == limit else None,
    }
    if total:
        n, more = session.queue.count(cap=TOTAL_CAP, **filters)
        page.update(total=n, total_capped=more, total_display=f"{n:,}+" if more else f"{n:,}")
    return page


# -- bulk actions ------------------------------------------------------------------------------


def _matching(queue: JobQueue, f: JobFilter, states: tuple[str, ...], limit: int) -> list[int]:
    """Ids of the jobs the filter selects among ``states``, newest first, at most ``limit``
    + 1 (the one more says that more remain)."""
    filters = _filters(f)
    wanted = [s for s in (filters["states"] or states) if s in states]
    if not wanted:
        return []
    filters["states"] = wanted
    return [job.id for job in queue.list(**filters, limit=limit + 1)]


def _bulk(found: list[int], limit: int, dry_run: bool, act: Any) -> dict[str, Any]:
    """``more``: the filter selects more jobs than ``limit``; call again for the next ones."""
    ids, more = found[:limit], len(found) > limit
    if dry_run:
        return {"dry_run": True, "count": len(ids), "ids": ids, "more": more}
    results = {job_id: act(job_id) for job_id in ids}
    return {"dry_run": False, "count": len(ids), "ids": ids, "results": results, "more": more}


@router.post("/jobs/bulk/cancel", tags=["bulk"])
def bulk_cancel(body: BulkAction, session: DbSession) -> dict[str, Any]:
    """Cancel the waiting and running jobs the filter selects (``dry_run``: only say which)."""
    ids = _matching(session.queue, body.filter, ("pending", "retrying", "processing"), body.limit)
    return _bulk(ids, body.limit, body.dry_run, lambda i: session.queue.cancel(i, body.reason))


@router.post("/jobs/bulk/retry", tags=["bulk"])
def bulk_retry(body: BulkAction, session: DbSession) -> dict[str, Any]:
    """Put the dead letters the filter selects back as pending (``dry_run``: only say which)."""
    ids = _matching(session.queue, body.filter, ("dead_letter",), body.limit)
    return _bulk(ids, body.limit, body.dry_run, lambda i: "pending" if session.queue.retry(i) else "skipped")


@router.post("/jobs/bulk/redrive", tags=["bulk"])
def bulk_redrive(body: DeadLetterAction, session: DbSession) -> dict[str, Any]:
    """The SQL API's redrive by dead-letter filter (same as POST /dead-letters/redrive)."""
    return _redrive(body, session)


# -- one job (after the bulk routes: /jobs/bulk/... is not a job id) --------------------------


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: JobId, session: DbSession) -> dict[str, Any]:
    return _job(session.queue.get(job_id))


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(job_id: JobId, session: DbSession, body: CancelBody | None = None) -> dict[str, Any]:
    """Cancel a waiting job, or ask a running one to stop: ``cancelled``,
    ``cancel_requested`` or ``already_finished``."""
    return {"id": job_id, "status": session.queue.cancel(job_id, body.reason if body else None)}


@router.post("/jobs/{job_id}/retry", tags=["jobs"])
def retry_job(job_id: JobId, session: DbSession) -> dict[str, Any]:
    """Put a dead letter back as pending (same id); 409 for a job that is not one."""
    try:
        with session.conn.transaction():  # a savepoint: the request goes on after a refusal
            return {"id": session.queue.retry(job_id), "state": "pending"}
    except JobNotFound as refused:
        session.queue.get(job_id)  # 404 when the caller cannot see the job at all
        raise Problem(409, str(refused), field="id") from None


@router.delete("/jobs/{job_id}", tags=["jobs"])
def delete_job(job_id: JobId, session: DbSession) -> dict[str, Any]:
    """Delete a finished or dead job (409 for a live one: cancel it first)."""
    return {"id": job_id, "deleted": True, "state": session.queue.delete(job_id)}


@router.get("/jobs/{job_id}/logs", tags=["jobs"])
def job_logs(job_id: JobId, session: DbSession) -> dict[str, Any]:
    session.queue.get(job_id)  # 404 for a job the caller cannot see, rather than an empty list
    return {"id": job_id, "items": session.queue.logs(job_id)}


@router.get("/jobs/{job_id}/progress", tags=["jobs"])
def job_progress(job_id: JobId, session: DbSession) -> dict[str, Any]:
    job = session.queue.get(job_id)
    return {"id": job_id, "state": job.state.value, "progress": plain(job.row.get("progress"))}


# -- dead letters ------------------------------------------------------------------------------


@router.get("/dead-letters", tags=["dead letters"])
def list_dead_letters(
    session: DbSession,
    queue: str | None = None,
    type: str | None = None,
    reason: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    cursor: str | None = None,
) -> dict[str, Any]:
    before_id = decode_cursor(cursor) if cursor is not None else None
    rows = session.queue.dead_letters(queue=queue, type=type, reason=reason, before_id=before_id, limit=limit)
    return {"items": rows, "next_cursor": encode_cursor(rows[-1]["id"]) if len(rows) == limit else None}


@router.get("/dead-letters/{job_id}", tags=["dead letters"])
def show_dead_letter(job_id: JobId, session: DbSession) -> dict[str, Any]:
    job = session.queue.get(job_id)
    if job.state.value not in ("dead_letter", "archived"):
        raise Problem(404, f"id: job {job_id} is not a dead letter (it is {job.state.value})", field="id")
    return _job(job)


def _redrive(body: DeadLetterAction, session: Session) -> dict[str, Any]:
    ids = session.queue.redrive(body.filter, limit=body.limit, dry_run=body.dry_run)
    return {"dry_run": body.dry_run, "count": len(ids), "ids": ids, "more": _more_dead(body, session, len(ids))}


def _more_dead(body: DeadLetterAction, session: Session, done: int) -> bool:
    """Whether dead letters matching the filter remain beyond this call's ``limit`` (true
    also when a 10,000-row dry run cannot look past the SQL API's cap)."""
    if done < body.limit:
        return False
    if body.dry_run and done >= MAX_DEAD_BATCH:
        return True
    skip = done if body.dry_run else 0  # a dry run changed nothing: the next one is past them
    return len(session.queue.redrive(body.filter, limit=skip + 1, dry_run=True)) > skip


@router.post("/dead-letters/redrive", tags=["dead letters"])
def redrive_dead_letters(body: DeadLetterAction, session: DbSession) -> dict[str, Any]:
    """Put the dead letters the filter selects back as pending (``dry_run``: only say which)."""
    return _redrive(body, session)


@router.post("/dead-letters/purge", tags=["dead letters"])
def purge_dead_letters(body: DeadLetterAction, session: DbSession) -> dict[str, Any]:
    """Delete the dead letters the filter selects (``dry_run`` lists them without deleting)."""
    if body.dry_run:
        ids = session.queue.redrive(body.filter, limit=body.limit, dry_run=True)
        return {"dry_run": True, "count": len(ids), "ids": ids, "more": _more_dead(body, session, len(ids))}
    purged = session.queue.purge_dead_letters(body.filter, limit=body.limit)
    # (purge also takes archived dead letters, which redrive does not list: a full batch says "more")
    return {"dry_run": False, "purged": purged, "more": purged >= body.limit}


# -- queues ------------------------------------------------------------------------------------


@router.get("/queues", tags=["queues"])
def list_queues(session: DbSession) -> dict[str, Any]:
    """Every queue's settings, and its depth by state (the caller's jobs only, as ever)."""
    return {"items": plain(session.queue.queues()), "stats": plain(session.queue.stats())}


@router.get("/queues/stats", tags=["queues"])
def queue_stats(session: DbSession) -> dict[str, Any]:
    return {"items": plain(session.queue.stats())}


@router.post("/queues/{name}/pause", tags=["queues"])
def pause_queue(name: str, session: DbSession) -> dict[str, Any]:
    session.queue.pause(name)
    return {"queue": name, "paused": True}


@router.post("/queues/{name}/resume", tags=["queues"])
def resume_queue(name: str, session: DbSession) -> dict[str, Any]:
    session.queue.resume(name)
    return {"queue": name, "paused": False}


@router.patch("/queues/{name}", tags=["queues"])
def configure_queue(name: str, body: QueueSettings, session: DbSession) -> dict[str, Any]:
    """Change the settings given (null clears one)."""
    settings = body.model_dump(exclude_unset=True)
    if not settings:
        raise Problem(422, "body: name at least one setting", field="body")
    return {"queue": name, "settings": session.queue.configure_queue(name, **settings)}


# -- alerts ----------------------------------------------------------------------------------


@router.get("/alerts", tags=["alerts"])
def list_alerts(
    session: DbSession,
    state: Annotated[Literal["open", "firing", "acknowledged", "resolved", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> dict[str, Any]:
    """Alert incidents (a token with a tenant gets 403: alerts report on every tenant)."""
    return {"items": plain(session.queue.alerts(state, limit=limit))}


@router.get("/alerts/{alert_id}", tags=["alerts"])
def get_alert(alert_id: int, session: DbSession) -> dict[str, Any]:
    return dict(plain(session.queue.get_alert(alert_id)))


@router.post("/alerts/{alert_id}/ack", tags=["alerts"])
def ack_alert(alert_id: int, session: DbSession) -> dict[str, Any]:
    """Acknowledge an alert, recorded as acknowledged by ``token:<id>``."""
    return dict(plain(session.queue.ack_alert(alert_id, by=f"token:{session.principal.token_id}")))


# -- schedules, workers, metrics ---------------------------------------------------------------


@router.get("/schedules", tags=["schedules"])
def list_schedules(session: DbSession) -> dict[str, Any]:
    return {"items": session.queue.schedules()}


@router.post("/schedules/{name}/pause", tags=["schedules"])
def pause_schedule(name: str, session: DbSession) -> dict[str, Any]:
    return session.queue.pause_schedule(name)


@router.post("/schedules/{name}/resume", tags=["schedules"])
def resume_schedule(name: str, session: DbSession) -> dict[str, Any]:
    return session.queue.resume_schedule(name)


@router.get("/workers", tags=["workers"])
def list_workers(session: DbSession) -> dict[str, Any]:
    return {"items": session.queue.workers()}


@router.get("/metrics", tags=["metrics"])
def metrics(
    session: DbSession,
    window: Annotated[float, Query(gt=0, le=30 * 86400, description="seconds")] = 3600,
) -> dict[str, Any]:
    """Throughput, failures and latency per queue and type over the last ``window`` seconds."""
    return {"window": window, "items": plain(session.queue.metrics(window))}
