"""``POST /api/v1/jobs`` without FastAPI's middleware, routing, dependency and thread-pool layers.

The hot path of the API (issue 18: at least 60 % of ``enqueue()``'s throughput). The app
(app.App) hands every ``POST /api/v1/jobs`` to this class before FastAPI's own layers; it
answers the request itself when it is the
plain case -- ``Authorization: Bearer``, ``Content-Type: application/json``, no ``Origin``, a
JSON object whose fields are among :data:`PLAIN_FIELDS` with the types the route's model
accepts as they are -- by calling :meth:`WebDatabase.enqueue_as_async` on the event loop (one
statement, ``jobqueue.enqueue_as_token``, one round trip: the database verifies the token,
acts as its role and tenant and enqueues, all in one transaction committed before the
answer).

Every other request for that path -- a cookie session (CSRF checked by the dashboard's
middleware), a CORS request, any body the quick checks do not accept as is (malformed JSON,
an unknown field, a wrong type, a field this path does not handle) -- is handed on
unchanged, with the body it read, to the FastAPI route ``api.create_job``, which answers as
it always did (its validation, its problem+json naming the field, 401 before 422 for a bad
token). So this path only ever answers 201 or the errors ``run_as`` raises (401, 429, the
SQL API's own refusals), rendered as the app's handlers render them, 413 for a body over
the server's limit (as ``BodySizeLimit`` answers; a Content-Length over it goes to the app,
whose ``BodySizeLimit`` answers before reading), and 500 for a bug; each with the
``Server-Timing`` header the app's ``ServerTiming`` adds. The route stays the one the
OpenAPI document describes.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobqueue.client import enqueue_params
from jobqueue.errors import JobQueueError
from jobqueue.web.auth import WebDatabase
from jobqueue.web.problems import MAX_BODY_BYTES, Problem, error_response, problem_response, too_large_response

#: The body fields this path takes, each with the types it accepts as they are (pydantic's
#: model would leave them unchanged). Anything else goes to the route.
PLAIN_FIELDS: dict[str, tuple[type, ...]] = {
    "type": (str,),
    "payload": (dict,),
    "queue": (str,),
    "priority": (int, str),
    "max_attempts": (int,),
    "unique_key": (str,),
    "tenant_id": (str,),
    "user_id": (str,),
}
TYPE_MAX_CHARS = 255  # api.JobCreate.type
IDEMPOTENCY_KEY_MAX_CHARS = 255  # api.create_job's Idempotency-Key header
#: The enqueue_as_token statement's parameters after the token, in order (sql/queries.sql).
WIRE_FIELDS = ("type", "payload", "queue", "priority", "max_attempts", "unique_key", "tenant_id", "user_id")
INT4_MAX = 2**31 - 1  # max_attempts is an integer parameter: larger goes to the route

log = logging.getLogger("jobqueue.web")


class FastPost:
    """Answers the plain ``POST <path>`` itself; hands everything else to ``app``."""

    def __init__(self, app: ASGIApp, db: WebDatabase, path: str, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.db = db
        self.path = path
        self.max_body_bytes = max_body_bytes

    def takes(self, scope: Scope) -> bool:
        """Whether ``scope`` is a request this path looks at (else: straight to ``app``)."""
        return bool(scope["type"] == "http" and scope["path"] == self.path and scope["method"] == "POST")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.takes(scope) or self.db.apool is None:
            await self.app(scope, receive, send)
            return
        token = _plain_headers(scope, self.max_body_bytes)
        if token is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        chunks = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:  # 413 before the rest is read
                await _answer(too_large_response(self.max_body_bytes), started, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        params = _plain_params(body, token[1])
        if params is None:
            await self.app(scope, _replay(body, receive), send)
            return
        client = scope["client"][0] if scope.get("client") else "?"
        try:
            job_id = await self.db.enqueue_as_async(token[0], params, client=client)
        except (Problem, JobQueueError) as exc:
            await _answer(error_response(exc), started, scope, receive, send)
            return
        except Exception:  # a bug: what the app's ServerErrorMiddleware would do, as problem+json
            log.exception("POST %s failed", self.path, extra={"action": "web_error"})
            await _answer(problem_response(500, "internal error: see the server's log"), started, scope, receive, send)
            return
        content = b'{"id":%d}' % job_id
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"content-length", b"%d" % len(content)),
                    (b"content-type", b"application/json"),
                    (b"location", b"/api/v1/jobs/%d" % job_id),
                    _server_timing(started),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _server_timing(started: float) -> tuple[bytes, bytes]:
    """The ``Server-Timing`` header app.ServerTiming adds to the app's answers."""
    return b"server-timing", b"app;dur=%.3f" % ((time.perf_counter() - started) * 1000)


async def _answer(response: Response, started: float, scope: Scope, receive: Receive, send: Send) -> None:
    name, value = _server_timing(started)
    response.headers[name.decode()] = value.decode()
    await response(scope, receive, send)


def _plain_headers(scope: Scope, max_body_bytes: int) -> tuple[str, str | None] | None:
    """(token, Idempotency-Key) when the headers are the plain case, else None (a
    Content-Length over the limit, or not a number, too: the app's BodySizeLimit answers)."""
    authorization = idempotency_key = None
    json_body = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or int(value) > max_body_bytes:
                return None
        elif name == b"authorization":
            if authorization is not None:
                return None
            authorization = value
        elif name == b"content-type":
            if json_body or value.split(b";", 1)[0].strip().lower() != b"application/json":
                return None
            json_body = True
        elif name == b"idempotency-key":
            if idempotency_key is not None:
                return None
            idempotency_key = value.decode("latin-1")
        elif name == b"origin":  # CORS: the app's CORS middleware answers
            return None
    if authorization is None or not json_body:
        return None  # a cookie session (the dashboard's CSRF check) or no credentials
    scheme, _, value = authorization.decode("latin-1").partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token or "\x00" in token:
        return None
    if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_CHARS:
        return None
    return token, idempotency_key


def _plain_params(body: bytes, idempotency_key: str | None) -> list[bytes | None] | None:
    """The enqueue_as_token statement's parameters after the token (:data:`WIRE_FIELDS`, as
    UTF-8 text) when the body is the plain case, else None."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if type(doc) is not dict:
        return None
    options: dict[str, Any] = {}
    for key, value in doc.items():
        kinds = PLAIN_FIELDS.get(key)
        if kinds is None or (value is not None and type(value) not in kinds):
            return None  # an unknown field, or a type the model would convert or refuse
        if value is not None:
            options[key] = value
    kind, payload = options.pop("type", None), options.pop("payload", {})
    if kind is None or not 1 <= len(kind) <= TYPE_MAX_CHARS or ("payload" in doc and doc["payload"] is None):
        return None
    if idempotency_key is not None:
        if options.get("unique_key", idempotency_key) != idempotency_key:
            return None  # the route says which to send
        options["unique_key"] = idempotency_key
    try:
        params = enqueue_params(kind, payload, options)
    except JobQueueError:
        return None  # the route verifies the token first, then names the field
    return _wire(params)


def _wire(params: dict[str, Any]) -> list[bytes | None] | None:
    """``params`` (enqueue_params's) as the text libpq sends; None for what text parameters
    cannot carry as they are (NUL, a lone surrogate) or an integer out of the parameter's
    range: the route answers those."""
    wire: list[bytes | None] = []
    for name in WIRE_FIELDS:
        value = params[name]
        if value is None:
            wire.append(None)
            continue
        if name == "priority":
            value = json.dumps(value)  # JSON: enqueue takes 7 and "high" alike (to_jsonb)
        elif name == "max_attempts":
            if not -INT4_MAX <= value <= INT4_MAX:
                return None
            value = str(value)
        if "\x00" in value:
            return None
        try:
            wire.append(value.encode())
        except UnicodeEncodeError:
            return None
    return wire


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` once, then waits on the client as ``receive`` does."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
