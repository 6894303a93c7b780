"""Live job and queue changes over Server-Sent Events and a WebSocket (issue 18).

The source is the audit trail: every transition writes a ``job_event`` row, read through
``jobqueue.job_events`` in the *requesting token's own database session*, so row-level
security and grants decide what a stream shows (a tenant sees only its tenant's jobs; the
web code filters nothing). Nothing is added to the hot path: no trigger, no extra write.

When to read: one LISTEN connection per app on the existing ``jobqueue`` channel (enqueue,
retry, redrive, release, resume ... send it; the payload is only a queue name and is used
only as a wake-up) wakes every stream; a stream then waits ``DEBOUNCE_S`` so that a burst
of notifications costs one read. Transitions that do not NOTIFY (claim, complete, cancel,
a delayed retry) are picked up by a poll every ``POLL_INTERVAL_S``.

Missing nothing. ``job_event.id`` comes from a sequence, so ids commit out of order: a
reader that has seen id 11 may later see 10 commit. ``EventFollower`` therefore keeps a
*safe* cursor: after reading with snapshot S (max id seen M), every id up to M is final
once every transaction in progress at S has ended (the snapshot xmin of a later read has
passed S's xmax); until then it remembers the ids above the cursor that it has sent, so it
sends each once. The cursor also carries a time bound for the read (the BRIN index on
``at``; ``job_event.id`` is deliberately not indexed): the start time of the oldest
transaction that might still add an event, bounded by when its xid was first possible.
A client that reconnects with its cursor (the SSE ``id``, sent back as ``Last-Event-ID``,
or the WebSocket's ``cursor``) receives every event after it that is still in the table
(retention prunes old ones), possibly a few it has already had: events carry their own id,
so a client drops duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import psycopg
from psycopg.rows import dict_row
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from jobqueue.listener import PROBE_PREFIX, Listener
from jobqueue.sql import query
from jobqueue.web.problems import Problem

#: A stream reads again this long after a wake-up, so a burst of NOTIFYs costs one read.
DEBOUNCE_S = 0.1
#: Reads this often even without a NOTIFY (claim, complete and cancel do not send one).
POLL_INTERVAL_S = 1.0
#: A comment line this often keeps proxies from closing an idle SSE connection.
KEEPALIVE_S = 15.0
#: Events per read; a stream that gets this many reads again at once.
BATCH_ROWS = 500
#: Subtracted from every time bound (the clocks are the server's own; this is slack only).
TIME_SLACK = timedelta(seconds=1)
#: Polls remembered to bound the start of an in-flight transaction (about 1 h at 1/s).
HISTORY_POLLS = 4000

log = logging.getLogger("jobqueue.web.live")

#: Opens the database session of a request's token (its role, so grants and RLS apply).
SessionOpener = Callable[[HTTPConnection], AbstractContextManager[psycopg.Connection[Any]]]


class CursorError(ValueError):
    """A live-stream cursor that is not ``<event id>.<microseconds since the epoch>``."""


@dataclass(frozen=True)
class Cursor:
    """Where a stream stands: every event with id <= ``after`` has been delivered, and no
    undelivered event is older than ``since``."""

    after: int
    since: datetime

    def encode(self) -> str:
        return f"{self.after}.{int(self.since.timestamp() * 1_000_000)}"

    @classmethod
    def decode(cls, text: str, field_name: str = "cursor") -> Cursor:
        """Parse a cursor; ``CursorError`` names ``field_name`` when it is malformed."""
        after, dot, micros = text.strip().partition(".")
        if not dot or not after.isdigit() or not micros.isdigit() or len(after) > 19 or len(micros) > 18:
            raise CursorError(f"{field_name}: must be <event id>.<microseconds>, as sent in an event's id")
        try:
            since = datetime.fromtimestamp(int(micros) / 1_000_000, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise CursorError(f"{field_name}: time out of range") from exc
        return cls(int(after), since)


@dataclass
class _Snapshot:
    xmin: int
    xmax: int
    xip: list[int]
    at: datetime


def _parse_snapshot(text: str, at: datetime) -> _Snapshot:
    xmin, xmax, xip = text.split(":")
    return _Snapshot(int(xmin), int(xmax), [int(x) for x in xip.split(",") if x], at)


@dataclass
class EventFollower:
    """Reads the audit trail after a cursor, each event once, never skipping a late commit.

    ``read(conn)`` runs one read in ``conn`` (the caller's own session) and returns the new
    events in id order; ``cursor`` is then the position to resume from.

    Reads go in *passes*: a pass starts at the safe cursor and reads pages of ``batch``
    events, each page after the last one's highest id, until a page is not full
    (``truncated`` says another page is due at once). Since ids commit out of order, a page
    may miss an event of a lower id still in flight; the cursor only passes ids that are
    final, and the next pass reads from the cursor again (sending nothing twice).
    """

    start: Cursor
    batch: int = BATCH_ROWS
    cursor: Cursor = field(init=False)
    #: ids above cursor.after already sent
    _sent: set[int] = field(default_factory=set)
    #: (snapshot xmax, id) of earlier reads, both rising: every event with an id <= id was
    #: visible to that read or written by a transaction running at its snapshot, so all of
    #: them are final once a snapshot's xmin reaches xmax
    _pending: deque[tuple[int, int]] = field(default_factory=deque)
    #: (snapshot xmax, its time) of recent reads, oldest first
    _history: deque[tuple[int, datetime]] = field(default_factory=lambda: deque(maxlen=HISTORY_POLLS))
    truncated: bool = False
    #: where the pass's next page starts (None: the next read starts a pass at the cursor)
    _page_after: int | None = None
    #: the xmin of the pass's first snapshot: the pages read since saw everything final then
    _pass_xmin: int = 0
    #: the lowest time bound of the pass's pages: an event in flight at any of them is newer
    _pass_since: datetime | None = None

    def __post_init__(self) -> None:
        self.cursor = self.start

    def read(self, conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
        # One statement: the snapshot it reports is the one job_events (STABLE) reads with,
        # which is what the cursor's reasoning needs, whatever the session's isolation.
        after = self.cursor.after if self._page_after is None else max(self._page_after, self.cursor.after)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query("live_events"), {"after": after, "since": self.cursor.since, "max_rows": self.batch})
            rows = cur.fetchall()
        snap = _parse_snapshot(rows[0]["snapshot"], rows[0]["now"])
        return self._advance(snap, [r for r in rows if r["id"] is not None])

    def _advance(self, snap: _Snapshot, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        first_page = self._page_after is None
        if first_page:
            self._pass_xmin = snap.xmin
        fresh = [r for r in rows if r["id"] not in self._sent]
        self._sent.update(r["id"] for r in fresh)
        self.truncated = len(rows) >= self.batch
        # this page read every visible id up to read_upto (to the end when not full)
        read_upto = rows[-1]["id"] if self.truncated else None
        upto = read_upto if read_upto is not None else max(self._sent, default=self.cursor.after)
        if not self._pending or upto > self._pending[-1][1]:  # else an earlier entry covers it
            self._pending.append((snap.xmax, upto))
        after = self.cursor.after
        # The pages of this pass, read from the cursor on, saw every event that was final
        # when the pass began: pass each earlier read's ids whose writers had all ended then.
        while self._pending and self._pending[0][0] <= self._pass_xmin:
            _, final = self._pending[0]
            if read_upto is not None and final > read_upto:
                break  # the pass has not read that far yet
            self._pending.popleft()
            after = max(after, final)
        self._sent = {i for i in self._sent if i > after}
        self._history.append((snap.xmax, snap.at))
        bound = self._time_bound(snap)
        self._pass_since = bound if first_page or self._pass_since is None else min(self._pass_since, bound)
        # the time bound moves at the end of a pass only, to the lowest of its pages' bounds:
        # an event in flight at an earlier page's snapshot may have committed since, unread
        since = self.cursor.since if self.truncated else self._pass_since
        self.cursor = Cursor(after, since)
        self._page_after = read_upto
        return fresh

    def _time_bound(self, snap: _Snapshot) -> datetime:
        """No event not yet visible is older than this: a transaction that starts later
        writes events after snap.at; one in progress (xip) got its xid after the last read
        whose xmax was not above it."""
        bound = snap.at
        for xid in snap.xip:
            began = self.start.since
            for xmax, at in self._history:
                if xmax <= xid:
                    began = max(began, at)
            bound = min(bound, began)
        oldest = min(snap.xip, default=snap.xmax)
        while len(self._history) > 1 and self._history[1][0] <= oldest:
            self._history.popleft()
        return max(bound - TIME_SLACK, self.start.since)


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """An event as streamed: ids, queue, transition and time; never the payload. A queue
    change (job_id null) says which in ``change`` (paused, resumed, configured)."""
    event = {
        "id": row["id"],
        "job_id": row["job_id"],
        "queue": row["queue"],
        "from": row["from_state"],
        "to": row["to_state"],
        "at": row["at"].isoformat(),
    }
    if row["job_id"] is None:
        event["change"] = (row["detail"] or {}).get("change")
    return event


class Wakeups:
    """One LISTEN connection for the app; every stream awaits ``wait()``."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Event] = set()
        self._listener: Listener | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self.url is None or self._listener is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._listener = _AnyQueueListener(self.url, (), self._wake_threadsafe, application_name="jobqueue-web-live")
        self._listener.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop(timeout=2.0)
            self._listener = None

    def _wake_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for event in self._waiters:
            event.set()

    async def wait(self, timeout: float) -> bool:
        """True when woken by a NOTIFY, False after ``timeout`` seconds."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
                return True
            return False
        finally:
            self._waiters.discard(event)


class _AnyQueueListener(Listener):
    """The worker's listener, woken by a notification for any queue."""

    def _notified(self, payload: str) -> None:
        if not payload.startswith(PROBE_PREFIX):
            self.wake()


async def follow(
    opener: SessionOpener,
    conn_of: HTTPConnection,
    wakeups: Wakeups,
    start: Cursor,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[tuple[Cursor, list[dict[str, Any]]]]:
    """Yield (cursor, new events) after every read that found some, and (cursor, []) when
    ``KEEPALIVE_S`` passed without any, until ``gone()`` says the client left (checked every
    round, so a stream whose client went away ends within ``POLL_INTERVAL_S``, not at its next
    write: an SSE response learns of a closed connection only when it writes)."""
    follower = EventFollower(start)
    wakeups.start()  # the app's one LISTEN connection, opened by its first stream
    loop = asyncio.get_running_loop()
    last = loop.time()

    def read() -> list[dict[str, Any]]:
        with opener(conn_of) as conn:
            return follower.read(conn)

    while gone is None or not await gone():
        try:
            events = await anyio.to_thread.run_sync(read)
        except Problem as problem:
            if problem.status in (401, 403):  # the token was revoked or expired meanwhile
                raise StreamRefused(problem.detail) from None
            raise
        if events or loop.time() - last >= KEEPALIVE_S:
            last = loop.time()
            yield follower.cursor, [event_json(e) for e in events]
        if follower.truncated:
            continue
        if await wakeups.wait(POLL_INTERVAL_S):
            await asyncio.sleep(DEBOUNCE_S)


class StreamRefused(Exception):
    """The stream's token is refused now (revoked or expired since the stream began)."""


def start_cursor(text: str | None, field_name: str) -> Cursor:
    """The client's cursor, or "from now" for a first connection."""
    if text:
        return Cursor.decode(text, field_name)
    return Cursor(0, datetime.now(UTC))


def _problem(status: int, title: str, detail: str, field_name: str) -> Response:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail, "field": field_name})
    return Response(body, status_code=status, media_type="application/problem+json")


async def _verify(opener: SessionOpener, conn_of: HTTPConnection) -> None:
    """Open (and close) the token's session once, so a refused token fails before streaming."""

    def run() -> None:
        with opener(conn_of):
            pass

    await anyio.to_thread.run_sync(run)


def routes(opener: SessionOpener, wakeups: Wakeups, check: Callable[[HTTPConnection], None]) -> list[BaseRoute]:
    """``GET /events`` (SSE) and ``/ws`` (WebSocket); ``check`` raises when not signed in."""

    async def sse(request: Request) -> Response:
        check(request)
        await _verify(opener, request)  # a bad, expired or revoked token: its 401 problem now
        field_name = "Last-Event-ID" if request.headers.get("last-event-id") else "cursor"
        try:
            start = start_cursor(request.headers.get("last-event-id") or request.query_params.get("cursor"), field_name)
        except CursorError as exc:
            return _problem(400, "Bad cursor", str(exc), field_name)

        async def body() -> AsyncIterator[str]:
            yield f"retry: 1000\nid: {start.encode()}\n: connected\n\n"
            try:
                async for cursor, events in follow(opener, request, wakeups, start, request.is_disconnected):
                    if events:
                        yield f"id: {cursor.encode()}\nevent: jobs\ndata: {json.dumps(events)}\n\n"
                    else:
                        yield ": keepalive\n\n"
            except StreamRefused as refused:  # the stream ends, cleanly, saying why
                why = {"status": 401, "field": "token", "detail": str(refused)}
                yield f"event: refused\ndata: {json.dumps(why)}\n\n"

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()  # then close with a code the client can read (4401, 4400)
        try:
            check(websocket)
            await _verify(opener, websocket)
        except Exception:  # no token, or one the database refuses
            await websocket.close(code=4401)
            return
        try:
            start = start_cursor(websocket.query_params.get("cursor"), "cursor")
        except CursorError as exc:
            await websocket.send_json({"error": str(exc)})
            await websocket.close(code=4400)
            return
        await websocket.send_json({"cursor": start.encode(), "events": []})
        with contextlib.suppress(WebSocketDisconnect):
            try:
                async for cursor, events in follow(opener, websocket, wakeups, start):
                    await websocket.send_json({"cursor": cursor.encode(), "events": events})
            except StreamRefused as refused:
                await websocket.send_json({"error": str(refused)})
                await websocket.close(code=4401)

    return [Route("/events", sse, methods=["GET"]), WebSocketRoute("/ws", ws)]
