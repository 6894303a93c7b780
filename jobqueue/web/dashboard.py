"""The dashboard: server-rendered pages over the same library calls as the API (issue 18).

``install(app)`` mounts it on the app ``create_app`` builds: the pages at ``/``, the
vendored static files at ``/static`` (shipped in the wheel, never a CDN), and the live
streams of live.py at ``/live/events`` (SSE) and ``/live/ws`` (WebSocket).

Signing in checks a token once and keeps it in an HttpOnly, SameSite=Strict cookie; every
page then runs in that token's database session (auth.py), so its role and tenant decide
what a page shows and what an action may do. Every state-changing request carries a CSRF
token derived from the session token (``csrf_token``): a form field for the dashboard's
own posts, the ``X-CSRF-Token`` header for API calls authenticated by the cookie; without
it a post is refused (403) and the API sees no credentials (401). A viewer's pages have no
action buttons, and the database refuses its actions anyway.

Redis, when configured (``--redis-url``), is only a cache for the overview's queue figures
(the mirror ``jobqueue worker --redis-url`` keeps), read for tokens with no tenant; when it
is absent, stale or down the overview reads the database and shows nothing amiss.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.requests import HTTPConnection
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from jobqueue.errors import JobQueueError, PermissionDenied
from jobqueue.sql import query
from jobqueue.web import live
from jobqueue.web.auth import Session, WebDatabase
from jobqueue.web.problems import Problem

log = logging.getLogger("jobqueue.web.dashboard")

HERE = Path(__file__).parent
COOKIE = "jobqueue_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: The cookie lasts this long (the token's own expiry ends it sooner).
COOKIE_MAX_AGE_S = 12 * 3600
#: The sign-in form's own CSRF value (double submit: the form field and this cookie).
LOGIN_COOKIE = "jobqueue_login"
LOGIN_CSRF_FIELD = "login_csrf"
LOGIN_FORM_MAX_AGE_S = 3600
PAGE_ROWS = 50
JOB_STATES = ("pending", "processing", "retrying", "completed", "cancelled", "dead_letter", "archived")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: How many jobs a bulk action or a dead-letter redrive takes at once.
BULK_LIMIT = 1000
#: The overview reads the Redis mirror only when all its figures are at most this old (s).
CACHE_MAX_AGE_S = 15.0

templates = Jinja2Templates(directory=str(HERE / "templates"))


def csrf_token(token: str) -> str:
    """The CSRF token of a session: only someone who holds the session token can make it."""
    return hashlib.sha256(b"jobqueue-csrf\x00" + token.encode()).hexdigest()


def _cookie_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"cookie":
            cookies: SimpleCookie = SimpleCookie()
            try:
                cookies.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header: as if there were none
                return None
            if COOKIE in cookies and cookies[COOKIE].value:
                return cookies[COOKIE].value
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class SessionCookie:
    """Hands the session cookie's token to auth.py (``request.state.jobqueue_token``).

    Outside the dashboard's own pages (which check their form's CSRF field themselves), a
    state-changing request gets the token only with a matching ``X-CSRF-Token`` header: a
    cross-site form post to the API carries the cookie (if a browser ignores SameSite) but
    cannot know the header, so it arrives with no credentials at all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            token = _cookie_token(scope)
            if token:
                method = scope.get("method", "GET")
                path: str = scope.get("path", "")
                own_form = scope["type"] == "http" and not path.startswith(("/api/", "/live/"))
                header = _header(scope, CSRF_HEADER.encode())
                if method in SAFE_METHODS or own_form or (header and hmac.compare_digest(header, csrf_token(token))):
                    scope.setdefault("state", {})["jobqueue_token"] = token
        await self.app(scope, receive, send)


# -- plumbing --------------------------------------------------------------------------------


def _db(conn: HTTPConnection) -> WebDatabase:
    db: WebDatabase = conn.app.state.jobqueue_db
    return db


def _token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    token = conn.scope.get("state", {}).get("jobqueue_token")
    return str(token) if token else None


def _client(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "?"


@contextmanager
def _session(conn: HTTPConnection) -> Iterator[Session]:
    with _db(conn).session(_token(conn), client=_client(conn)) as session:
        yield session


@contextmanager
def _live_session(conn: HTTPConnection) -> Iterator[psycopg.Connection[Any]]:
    with _session(conn) as session:
        yield session.conn


def _check_signed_in(conn: HTTPConnection) -> None:
    if not _token(conn):
        raise Problem(401, "token: sign in first (or send Authorization: Bearer <token>)", field="token")


def _render(request: Request, name: str, session: Session | None, status: int = 200, **context: Any) -> HTMLResponse:
    token = _token(request)
    context.update(
        request=request,
        principal=session.principal if session else None,
        can_act=bool(session and session.principal.can_act),
        is_admin=bool(session and session.principal.is_admin),
        csrf=csrf_token(token) if token else "",
        page=name.removesuffix(".html"),
        now=datetime.now(UTC),
    )
    return templates.TemplateResponse(request, name, context, status_code=status)


def _page(request: Request, name: str, build: Callable[[Session], dict[str, Any]]) -> Response:
    """Render a page in the request's session; sign in first when there is none."""
    if not _token(request):
        return RedirectResponse("/login?next=" + request.url.path, status_code=303)
    try:
        with _session(request) as session:
            try:
                context = build(session)
            except PermissionDenied as refused:  # the token's role may not read this page
                return _render(request, "refused.html", session, status=403, detail=str(refused))
            return _render(request, name, session, **context)
    except Problem as problem:
        if problem.status == 401:
            response = RedirectResponse("/login", status_code=303)
            response.delete_cookie(COOKIE, path="/")
            return response
        raise


async def _form(request: Request) -> FormData:
    form = await request.form()
    token = _token(request)
    sent = form.get(CSRF_FIELD)
    if not token or not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(token)):
        raise Problem(403, f"{CSRF_FIELD}: missing or wrong; reload the page and try again", field=CSRF_FIELD)
    return form


def _ids(form: FormData) -> list[int]:
    ids: list[int] = []
    for value in form.getlist("id"):
        if not isinstance(value, str) or not value.isdigit():
            raise Problem(422, f"id: {value!r} is not a job id", field="id")
        ids.append(int(value))
    return ids


def _local_path(target: str) -> bool:
    """Whether a redirect target stays on this site (no //host, no /\\host, no scheme)."""
    return target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target


def _opt(value: str | None) -> str | None:
    return value.strip() or None if value else None


# -- figures ---------------------------------------------------------------------------------


def overview_figures(session: Session, cache: Any = None) -> dict[str, Any]:
    """Queue depths by state, oldest-job age, the last hour's per-minute throughput and
    error rate, and open alerts (failing health checks)."""
    stats = None
    cache_state = "none"  # not configured (or not for this token)
    if cache is not None and session.principal.tenant_id is None and session.principal.role != "producer":
        try:
            stats = cache.read() or None
            cache_state = "used" if stats else "empty"
        except Exception:  # a cache only: any failure means "read the database"
            stats, cache_state = None, "unavailable"
        # fresh only: every queue's figures written within the mirror's lifetime (its keys
        # expire after three intervals; a mirror whose clock or writer went astray is not read)
        oldest = time.time() - CACHE_MAX_AGE_S
        if stats and not all(float(s.get("updated_at") or 0) >= oldest for s in stats):
            stats, cache_state = None, "stale"
    if stats is None:
        stats = session.queue.stats()
    rows = session.conn.execute(query("event_counts"), {"window": timedelta(hours=1), "step": timedelta(minutes=1)})
    buckets: dict[int, list[int]] = {}
    for row in rows.fetchall():
        at = int(row["bucket"].timestamp())
        b = buckets.setdefault(at, [0, 0])
        b[0] += int(row["completed"])
        b[1] += int(row["failed"])
    start = int((datetime.now(UTC) - timedelta(hours=1)).timestamp()) // 60 * 60
    xs = list(range(start, start + 3660, 60))
    done = [buckets.get(x, [0, 0])[0] for x in xs]
    failed = [buckets.get(x, [0, 0])[1] for x in xs]
    rate = [round(100.0 * f / (d + f), 1) if d + f else None for d, f in zip(done, failed, strict=True)]
    return {
        "stats": [dict(s) for s in stats],
        "series": {"t": xs, "completed": done, "failed": failed, "error_rate": rate},
        "alerts": open_alerts(session),
        "cache_state": cache_state,
    }


def open_alerts(session: Session, state: str = "open") -> list[dict[str, Any]]:
    """Alert incidents (``jobqueue.alerts``) in ``state``; [] when this token may not read
    them (tenants, producers) -- the page shows everything else anyway."""
    try:
        with session.conn.transaction():  # a savepoint: a refusal leaves the request usable
            return [dict(r) for r in session.queue.alerts(state, limit=100)]
    except (JobQueueError, psycopg.Error):
        return []


def _jobs_filter(request: Request) -> dict[str, Any]:
    q = request.query_params
    states = [s for s in q.getlist("state") if s]
    for s in states:
        if s not in JOB_STATES:
            raise Problem(422, f"state: {s!r} is not one of {', '.join(JOB_STATES)}", field="state")
    before = _opt(q.get("before"))
    if before is not None and not before.isdigit():
        raise Problem(422, f"before: {before!r} is not a job id", field="before")
    return {
        "states": states or None,
        "queue": _opt(q.get("queue")),
        "type": _opt(q.get("type")),
        "before_id": int(before) if before else None,
    }


def _list_jobs(session: Session, flt: dict[str, Any], search: str | None) -> list[Any]:
    if search:
        if not search.isdigit():
            raise Problem(422, f"q: {search!r} is not a job id", field="q")
        try:
            return [session.queue.get(int(search))]
        except JobQueueError:
            return []
    return list(session.queue.list(limit=PAGE_ROWS, **flt))


# -- routes ----------------------------------------------------------------------------------


def install(app: FastAPI, *, redis_url: str | None = None, listen: bool = True) -> None:
    """Mount the dashboard, its static files and the live streams on ``app``.

    ``redis_url`` (default: ``JOBQUEUE_REDIS_URL``) is the overview's optional cache;
    ``listen`` False: streams only poll (no LISTEN connection)."""
    redis_url = redis_url or os.environ.get("JOBQUEUE_REDIS_URL") or None
    db: WebDatabase = app.state.jobqueue_db
    wakeups = live.Wakeups(db.target.url if listen else None)
    cache = _redis_cache(redis_url)
    app.state.jobqueue_wakeups = wakeups
    app.router.routes.append(Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"))
    app.router.routes.append(Mount("/live", routes=live.routes(_live_session, wakeups, _check_signed_in)))
    app.add_middleware(SessionCookie)

    def login_form(request: Request, target: str, status: int = 200, error: str | None = None) -> Response:
        """The sign-in page, with a fresh login-CSRF value in the form and in a SameSite=Strict
        cookie: a form posted from another site carries no such cookie, so it cannot sign a
        victim's browser in to the attacker's token."""
        nonce = secrets.token_urlsafe(24)
        response = _render(request, "login.html", None, status=status, error=error, next=target, login_csrf=nonce)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_FORM_MAX_AGE_S, path="/login", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
        return response

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        return login_form(request, request.query_params.get("next", "/"))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token") or "").strip()
        target = str(form.get("next") or "/")
        if not _local_path(target):
            target = "/"
        sent, kept = form.get(LOGIN_CSRF_FIELD), request.cookies.get(LOGIN_COOKIE)
        if not isinstance(sent, str) or not kept or not hmac.compare_digest(sent, kept):
            error = f"{LOGIN_CSRF_FIELD}: the sign-in form expired or came from another site; sign in again"
            return login_form(request, target, status=403, error=error)
        try:
            with _db(request).session(token, client=_client(request)):
                pass
        except Problem as problem:
            return login_form(request, target, status=problem.status, error=problem.detail)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await _form(request)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", include_in_schema=False)
    def overview(request: Request) -> Response:
        return _page(request, "overview.html", lambda s: overview_figures(s, cache))

    @app.get("/fragments/overview", include_in_schema=False)
    def overview_fragment(request: Request) -> Response:
        return _page(request, "_overview_body.html", lambda s: overview_figures(s, cache))

    def jobs_context(request: Request, s: Session) -> dict[str, Any]:
        flt = _jobs_filter(request)
        search = _opt(request.query_params.get("q"))
        jobs = _list_jobs(s, flt, search)
        queues = [q["name"] for q in s.queue.queues()]
        return {
            "jobs": jobs,
            "flt": flt,
            "search": search or "",
            "states": JOB_STATES,
            "queues": queues,
            "query": str(request.url.query),
            "next_before": jobs[-1].id if len(jobs) == PAGE_ROWS else None,
        }

    @app.get("/jobs", include_in_schema=False)
    def jobs_page(request: Request) -> Response:
        return _page(request, "jobs.html", lambda s: jobs_context(request, s))

    @app.get("/fragments/jobs", include_in_schema=False)
    def jobs_fragment(request: Request) -> Response:
        return _page(request, "_jobs_rows.html", lambda s: jobs_context(request, s))

    @app.post("/jobs/bulk", include_in_schema=False)
    async def jobs_bulk(request: Request) -> Response:
        form = await _form(request)
        action = form.get("action")
        if action not in ("cancel", "retry"):
            raise Problem(422, f"action: {action!r} is not cancel or retry", field="action")
        ids = _ids(form)[:BULK_LIMIT]
        results: list[tuple[int, str]] = []
        with _session(request) as s:
            for job_id in ids:
                try:
                    with s.conn.transaction():  # one refused job does not undo the others
                        if action == "cancel":
                            results.append((job_id, s.queue.cancel(job_id, "cancelled from the dashboard")))
                        else:
                            results.append((job_id, f"retried as {s.queue.retry(job_id)}"))
                except (JobQueueError, psycopg.Error) as exc:
                    results.append((job_id, f"refused: {exc}"))
            back = str(form.get("back") or "/jobs")
            return _render(
                request,
                "result.html",
                s,
                title=f"Bulk {action}",
                results=results,
                back=back if _local_path(back) else "/jobs",
            )

    def job_context(s: Session, job_id: int) -> dict[str, Any]:
        try:
            job = s.queue.get(job_id)
        except JobQueueError as exc:
            raise Problem(404, f"id: {exc}", field="id") from exc
        logs = s.queue.logs(job_id)
        timeline = s.conn.execute(query("job_timeline"), {"id": job_id}).fetchall()
        return {
            "job": job,
            "logs": logs,
            "timeline": timeline,
            "payload": json.dumps(job.payload, indent=2, default=str),
            "output": None if job.output is None else json.dumps(job.output, indent=2, default=str),
        }

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job_page(request: Request, job_id: int) -> Response:
        return _page(request, "job.html", lambda s: job_context(s, job_id))

    @app.get("/fragments/jobs/{job_id}", include_in_schema=False)
    def job_fragment(request: Request, job_id: int) -> Response:
        return _page(request, "_job_live.html", lambda s: job_context(s, job_id))

    @app.post("/jobs/{job_id}/{action}", include_in_schema=False)
    async def job_action(request: Request, job_id: int, action: str) -> Response:
        form = await _form(request)
        if action not in ("cancel", "retry"):
            raise Problem(404, f"action: {action!r} is not cancel or retry", field="action")
        with _session(request) as s:
            try:
                with s.conn.transaction():
                    if action == "cancel":
                        s.queue.cancel(job_id, str(form.get("reason") or "cancelled from the dashboard"))
                    else:
                        s.queue.retry(job_id)
            except JobQueueError as exc:
                return _render(
                    request,
                    "result.html",
                    s,
                    status=409,
                    title=f"{action} refused",
                    results=[(job_id, str(exc))],
                    back=f"/jobs/{job_id}",
                )
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    def dead_filter(source: Any) -> dict[str, Any]:
        flt = {k: _opt(source.get(k)) for k in ("queue", "type", "reason")}
        return {k: v for k, v in flt.items() if v}

    @app.get("/dead-letters", include_in_schema=False)
    def dead_letters_page(request: Request) -> Response:
        flt = dead_filter(request.query_params)

        def build(s: Session) -> dict[str, Any]:
            return {"rows": s.queue.dead_letters(limit=PAGE_ROWS, **flt), "flt": flt, "query": str(request.url.query)}

        return _page(request, "dead_letters.html", build)

    @app.post("/dead-letters/{action}", include_in_schema=False)
    async def dead_letters_action(request: Request, action: str) -> Response:
        form = await _form(request)
        if action not in ("redrive", "purge"):
            raise Problem(404, f"action: {action!r} is not redrive or purge", field="action")
        flt: dict[str, Any] = dead_filter(form)
        ids = _ids(form)
        if ids:
            flt["ids"] = ids
        confirmed = form.get("confirm") == "yes"
        with _session(request) as s:
            try:
                with s.conn.transaction():
                    would = s.queue.redrive(flt, limit=BULK_LIMIT + 1, dry_run=True)
                    more = len(would) > BULK_LIMIT  # one call does BULK_LIMIT: the page offers the next
                    would = would[:BULK_LIMIT]
                    done: int | None = None
                    if confirmed and action == "redrive":
                        done = len(s.queue.redrive(flt, limit=BULK_LIMIT))
                    elif confirmed:
                        done = s.queue.purge_dead_letters({**flt, "state": "dead_letter"}, limit=BULK_LIMIT)
            except JobQueueError as exc:
                return _render(
                    request,
                    "result.html",
                    s,
                    status=422,
                    title=f"{action} refused",
                    results=[(0, str(exc))],
                    back="/dead-letters",
                )
            return _render(
                request, "dead_confirm.html", s, action=action, flt=flt, ids=ids, would=would, done=done, more=more
            )

    @app.get("/workers", include_in_schema=False)
    def workers_page(request: Request) -> Response:
        def build(s: Session) -> dict[str, Any]:
            try:
                with s.conn.transaction():
                    rows = s.queue.workers()
            except (JobQueueError, psycopg.Error) as exc:
                return {"rows": [], "refused": str(exc)}
            return {"rows": rows, "refused": None}

        return _page(request, "workers.html", build)

    @app.get("/alerts", include_in_schema=False)
    def alerts_page(request: Request) -> Response:
        state = request.query_params.get("state") or "open"
        if state not in ("open", "firing", "acknowledged", "resolved", "all"):
            raise Problem(422, f"state: {state!r} is not open, firing, acknowledged, resolved or all", field="state")

        def build(s: Session) -> dict[str, Any]:
            try:
                with s.conn.transaction():  # a savepoint: a refusal leaves the request usable
                    rows = [dict(r) for r in s.queue.alerts(state, limit=100)]
            except (JobQueueError, psycopg.Error) as exc:
                return {"rows": [], "state": state, "refused": str(exc).strip()}
            return {"rows": rows, "state": state, "refused": None}

        return _page(request, "alerts.html", build)

    @app.post("/alerts/{alert_id}/ack", include_in_schema=False)
    async def alert_ack(request: Request, alert_id: int) -> Response:
        await _form(request)
        with _session(request) as s:
            s.queue.ack_alert(alert_id, s.principal.name or f"token {s.principal.token_id}")
        return RedirectResponse("/alerts", status_code=303)

    @app.get("/schedules", include_in_schema=False)
    def schedules_page(request: Request) -> Response:
        def build(s: Session) -> dict[str, Any]:
            try:
                with s.conn.transaction():
                    rows = s.queue.schedules()
            except (JobQueueError, psycopg.Error) as exc:
                return {"rows": [], "refused": str(exc)}
            return {"rows": rows, "refused": None}

        return _page(request, "schedules.html", build)

    @app.post("/schedules/{name}/{action}", include_in_schema=False)
    async def schedule_action(request: Request, name: str, action: str) -> Response:
        await _form(request)
        if action not in ("pause", "resume"):
            raise Problem(404, f"action: {action!r} is not pause or resume", field="action")
        with _session(request) as s:
            if action == "pause":
                s.queue.pause_schedule(name)
            else:
                s.queue.resume_schedule(name)
        return RedirectResponse("/schedules", status_code=303)


def _redis_cache(url: str | None) -> Any:
    if not url:
        return None
    try:
        from jobqueue.mirror import RedisMirror

        return RedisMirror(url)
    except Exception as exc:  # redis not installed or a bad URL: the database serves alone
        log.info("overview cache off", extra={"action": "dashboard_cache_off", "error": str(exc)})
        return None
