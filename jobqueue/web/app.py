"""The application factory: :func:`create_app` builds the ASGI app ``jobqueue serve`` runs.

Layout of the app::

    /healthz               liveness (the process answers)
    /readyz                readiness (database reachable, schema current)
    /api/v1/...            the HTTP API (api.py), OpenAPI at /api/v1/openapi.json

The dashboard (another module) adds its routes to the app this returns (with
``include_in_schema=False``), and reaches the database through the same
:class:`~jobqueue.web.auth.WebDatabase` in ``app.state.jobqueue_db`` (dependency
:func:`jobqueue.web.auth.db_session`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobqueue.config import DatabaseTarget, resolve_database
from jobqueue.web import problems
from jobqueue.web.auth import WebDatabase
from jobqueue.web.fastpost import FastPost
from jobqueue.web.problems import MAX_BODY_BYTES  # the largest body accepted (413 past it)

#: ``jobqueue serve --workers N`` (N > 1): each uvicorn process calls this factory, which
#: reads the database URL and CORS origins the parent put in the environment.
APP_FACTORY = "jobqueue.web.app:create_app_from_env"
ENV_DATABASE_URL = "JOBQUEUE_WEB_DATABASE_URL"
ENV_CORS_ORIGINS = "JOBQUEUE_WEB_CORS_ORIGINS"

API_PREFIX = "/api/v1"
API_VERSION = "1"


def create_app(
    database_url: str | None = None,
    *,
    target: DatabaseTarget | None = None,
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    pool_size: int | None = None,
) -> FastAPI:
    """The ASGI app: the API at ``/api/v1``, ``/healthz`` and ``/readyz``.

    ``database_url`` must log in as ``jobqueue_web`` (docs/web.md); ``cors_origins`` (none:
    CORS off) are the browser origins allowed to call the API; bodies over
    ``max_body_bytes`` get 413.
    """
    from jobqueue.web import api, dashboard

    resolved = target or resolve_database(database_url)
    db = WebDatabase(resolved, **({"pool_size": pool_size} if pool_size else {}))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.open()
        await db.aopen()
        try:
            yield
        finally:
            await db.aclose()
            db.close()

    app = App(
        title="jobqueue",
        version=API_VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
        lifespan=lifespan,
    )
    app.state.jobqueue_db = db
    app.state.max_body_bytes = max_body_bytes
    problems.install(app)
    app.include_router(api.health_router)
    app.include_router(api.router, prefix=API_PREFIX)
    dashboard.install(app)  # the pages, /static and the /live streams (dashboard.py)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(ServerTiming)
    # POST /api/v1/jobs, the plain case, answered before FastAPI and its middleware (fastpost.py)
    app.fast_post = FastPost(app.full_stack, db=db, path=f"{API_PREFIX}/jobs", max_body_bytes=max_body_bytes)
    return app


class App(FastAPI):
    """FastAPI, with the plain ``POST /api/v1/jobs`` handed to :class:`FastPost` before
    FastAPI's own layers and the middleware stack: the hot path of the API, where each layer
    costs a few per cent of the request (FastPost answers 413 and Server-Timing itself, and
    hands every other request for that path to :meth:`full_stack`)."""

    fast_post: FastPost | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_post
        if fast is not None and fast.takes(scope):
            await fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def full_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app as FastAPI serves it: its middleware, routes and error handlers."""
        await super().__call__(scope, receive, send)


class ServerTiming:
    """``Server-Timing: app;dur=<ms>``: the time the app took, database included (what the
    web bench reports as server time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"server-timing", f"app;dur={took:.3f}".encode())],
                }
            await send(message)

        await self.app(scope, receive, timed)


def create_app_from_env() -> FastAPI:
    """:func:`create_app` from ``JOBQUEUE_WEB_DATABASE_URL`` and ``JOBQUEUE_WEB_CORS_ORIGINS``."""
    origins = json.loads(os.environ.get(ENV_CORS_ORIGINS) or "[]")
    return create_app(os.environ[ENV_DATABASE_URL], cors_origins=[str(o) for o in origins])


class BodySizeLimit:
    """413 problem+json for a body over ``max_bytes`` (by Content-Length, or counted as it
    streams in), before the route or its JSON parser sees any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problems.too_large_response(self.max_bytes)(scope, receive, send)


class _TooLarge(Exception):
    pass
