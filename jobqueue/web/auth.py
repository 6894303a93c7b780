"""Who a request acts as: an API token, verified by the database, and one transaction per
request under the token's own database role.

The server logs in as ``jobqueue_web``, a NOINHERIT role with no privileges of its own that
may ``SET ROLE`` to the roles tokens carry. For each request, in one transaction:

1. ``jobqueue.act_as_token(token)`` (SECURITY DEFINER) checks the token's sha256 against
   ``jobqueue.api_token`` (not revoked, not expired), keeps the token in the
   transaction-local setting ``jobqueue.token`` and returns its role and tenant;
2. ``SET LOCAL ROLE`` to that role's database role (``ROLE_OF_TOKEN``, constants), as
   ``set_config('role', ..., true)`` in the same statement (one round trip);
3. the route calls the library on this connection. ``jobqueue._tenant()``,
   ``jobqueue._is_admin()``, the row-level security policies and the views, which key on
   ``session_user``, see that it is ``jobqueue_web`` and derive the tenant, the admin right
   and the job owner from the token in ``jobqueue.token``, re-verified by its hash -- never
   from the web login's own memberships. A forged ``jobqueue.token`` verifies to nothing,
   and then nothing is visible.

The transaction commits when the route returns and rolls back when it raises, so an error
changes nothing. ``POST /jobs`` (the hot path) uses :meth:`WebDatabase.run_as` instead: the
same steps with the library's enqueue statement, sent as one pipeline (one round trip);
its lean path (fastpost.py) sends one statement on the event loop,
``jobqueue.enqueue_as_token`` (:meth:`WebDatabase.enqueue_as_async`), which does the same
three steps inside the database.
Failed sign-ins are counted per client address (``FailedAuthLimiter``) and logged without
the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import Request
from psycopg import pq
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from starlette.concurrency import run_in_threadpool

from jobqueue.client import JobQueue
from jobqueue.config import CONNECT_TIMEOUT_S, DatabaseTarget
from jobqueue.db import translate
from jobqueue.errors import DatabaseUnavailable
from jobqueue.sql import query
from jobqueue.web.problems import Problem

log = logging.getLogger("jobqueue.web")

#: The database role a token's role acts as (constants: never built from input).
ROLE_OF_TOKEN = {
    "viewer": "jobqueue_viewer",
    "producer": "jobqueue_producer",
    "operator": "jobqueue_operator",
    "admin": "jobqueue_admin",
}
TOKEN_ROLES = tuple(ROLE_OF_TOKEN)
_ROLES_JSON = json.dumps(ROLE_OF_TOKEN)

#: The login role the server must connect as (docs/web.md, deployment).
WEB_ROLE = "jobqueue_web"

#: Failed authentications allowed per client address per window before 429.
AUTH_FAILURES_PER_WINDOW = 10
AUTH_FAILURE_WINDOW_S = 60.0
#: Connections the server keeps to the database.
POOL_SIZE = 10
POOL_GET_TIMEOUT_S = 10.0
#: psycopg's prepare_threshold meaning "never on its own": only execute(..., prepare=True).
ONLY_WHEN_ASKED = 2**62
#: POST /jobs's lean path in one statement (WebDatabase.enqueue_as_async), and the name it is
#: prepared under on the event loop pool's connections.
_ENQUEUE_AS_TOKEN_SQL = query("enqueue_as_token").encode()
_ENQUEUE_AS_TOKEN = b"jobqueue_enqueue_as_token"


@dataclass(frozen=True)
class Principal:
    """The verified token a request acts as."""

    token_id: int
    role: str  # viewer | producer | operator | admin
    tenant_id: str | None
    name: str | None

    @property
    def can_act(self) -> bool:
        """Whether the dashboard should show action buttons (the database decides anyway)."""
        return self.role != "viewer"

    @property
    def is_admin(self) -> bool:
        """Whether the dashboard should show admin-only actions (purge; the database decides anyway)."""
        return self.role == "admin"


class BoundQueue(JobQueue):
    """The library on one request's connection and transaction (not pooled, not closed here)."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], target: DatabaseTarget) -> None:
        super().__init__(target.url)
        self._bound = conn
        self._target = target

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        yield self._bound


@dataclass
class Session:
    """One request's database session: its verified principal, the connection (in a
    transaction under the token's role) and the library bound to it."""

    principal: Principal
    conn: psycopg.Connection[dict[str, Any]]
    queue: JobQueue


class FailedAuthLimiter:
    """Failed authentications per client address in a sliding window (in this process)."""

    def __init__(self, limit: int = AUTH_FAILURES_PER_WINDOW, window_s: float = AUTH_FAILURE_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if t > now - self.window_s]
            self._failures[client] = recent
            if len(recent) < self.limit:
                return 0.0
            return max(recent[0] + self.window_s - now, 0.0)

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(time.monotonic())
            if len(self._failures) > 100_000:  # bound the memory an address scan can take
                self._failures.clear()


class WebDatabase:
    """The server's pool of ``jobqueue_web`` connections, and the per-request session."""

    def __init__(self, target: DatabaseTarget, *, pool_size: int = POOL_SIZE) -> None:
        self.target = target
        self.limiter = FailedAuthLimiter()
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "jobqueue-web",
            # Only the statements run with prepare=True are prepared (act_as_token and the
            # hot enqueue: function calls, one plan fits all); every other statement stays
            # unprepared, so each list filter gets a plan for its own values (index scans).
            # None (nothing prepared) when the target refuses prepared statements (PgBouncer).
            "prepare_threshold": ONLY_WHEN_ASKED if target.prepared_statements else None,
        }
        self.pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            target.url,
            min_size=1,
            max_size=pool_size,
            kwargs=self._kwargs,
            timeout=POOL_GET_TIMEOUT_S,
            name="jobqueue-web",
            open=False,
        )
        self._pool_size = pool_size
        #: POST /jobs's pool on the event loop (fastpost.py): opened by :meth:`aopen` in the
        #: app's lifespan; None before (the route then takes the thread pool path).
        self.apool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] | None = None
        #: the apool connections on which enqueue_as_token is prepared
        self._prepared: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

    async def aopen(self) -> None:
        """Open the event loop's pool (on the loop that will use it)."""
        self.apool = AsyncConnectionPool(
            self.target.url,
            min_size=1,
            max_size=self._pool_size,
            # UTF-8: enqueue_as_async sends its parameters as UTF-8 text itself
            kwargs={**self._kwargs, "client_encoding": "UTF8"},
            timeout=POOL_GET_TIMEOUT_S,
            name="jobqueue-web-async",
            open=False,
        )
        await self.apool.open(wait=False)

    async def aclose(self) -> None:
        if self.apool is not None:
            await self.apool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection as ``jobqueue_web`` itself (no token: health checks only)."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            if exc.sqlstate:
                raise translate(exc) from exc
            raise DatabaseUnavailable(f"could not connect to {self.target.display}: {exc}") from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise DatabaseUnavailable(f"no database connection within {POOL_GET_TIMEOUT_S:g} s") from exc
            raise

    @contextmanager
    def session(self, token: str | None, *, client: str = "?") -> Iterator[Session]:
        """Verify ``token`` and run the block in one transaction as its role and tenant.

        Raises Problem 401 (missing, unknown, expired or revoked token), 429 (too many
        failures from ``client``). Commits when the block returns, rolls back when it raises.
        """
        token = self._admit(token, client)
        with self.connection() as conn, conn.transaction():
            try:
                row = conn.execute(query("act_as_token"), self._act_params(token), prepare=True).fetchone()
            except psycopg.Error as exc:
                raise self._refused(exc, client) from None if exc.sqlstate == "28000" else exc
            yield Session(_principal(row), conn, BoundQueue(conn, self.target))

    def run_as(self, token: str | None, sql: str, params: Mapping[str, Any], *, client: str = "?") -> list[Any]:
        """Verify ``token`` and run one statement as its role and tenant, in one transaction
        sent as one pipeline: act_as_token + SET LOCAL ROLE, ``sql``, Sync, then one wait for
        both (one round trip, as a plain ``enqueue()``). On an autocommit connection the
        statements before a Sync are one implicit transaction, which the Sync commits (no
        BEGIN and COMMIT statements to send, parse and run); the database runs them in order
        and skips the rest after an error, so a refused token runs nothing and the failed
        transaction rolls back whole; the result returns only after the commit succeeded.
        Returns the statement's rows (tuples).
        Raises Problem 401/429 as :meth:`session`, a jobqueue error for the statement's failure.
        """
        token = self._admit(token, client)
        with self.connection() as conn:
            acting = rows = None
            try:
                # no psycopg transaction(): it would sync the pipeline at its edges (three
                # round trips instead of one); the pipeline's Sync ends the implicit transaction
                assert conn.autocommit
                with conn.pipeline():
                    acting = conn.execute(query("act_as_token"), self._act_params(token), prepare=True)
                    rows = conn.cursor(row_factory=tuple_row).execute(sql, params, prepare=True)
                principal = _principal(acting.fetchone())
            except psycopg.Error as exc:
                _roll_back(conn)
                raise self._pipeline_failure(exc, acting, client) from None if exc.sqlstate == "28000" else exc
            except BaseException:
                _roll_back(conn)
                raise
            assert rows is not None and principal.token_id
            return rows.fetchall()

    async def enqueue_as_async(self, token: str | None, values: Sequence[bytes | None], *, client: str = "?") -> int:
        """POST /jobs's lean path: verify ``token`` and enqueue one job as its role and tenant
        in **one statement**, ``jobqueue.enqueue_as_token`` (act_as_token, SET LOCAL ROLE and
        enqueue inside the database; one implicit transaction that the Sync commits), on the
        event loop's pool (:attr:`apool`, opened). ``values``: the statement's parameters
        after the token (sql/queries.sql ``enqueue_as_token``, $2..$9) as UTF-8 text.

        Sent through libpq itself (one Bind/Execute/Sync, one wait for the answer): psycopg's
        cursor, adapters and waiting cost about twice the CPU of the call in the server
        process (docs/performance.md). The statement is prepared once per connection, unless
        the target refuses prepared statements (a pooler in transaction mode).
        Returns the job's id. Raises Problem 401/429 as :meth:`session` (a refused token,
        counted), a jobqueue error for the enqueue's refusal; nothing is written then.
        """
        token = self._admit(token, client)
        assert self.apool is not None
        params = [token.encode(), *values]
        try:
            # getconn/putconn, not connection(): its `async with conn` adds a commit (a no-op
            # in autocommit, but a lock and checks: ~8 % of the server's time per POST). A
            # connection given back in use (a request cancelled mid-statement) is closed.
            conn = await self.apool.getconn()
            try:
                result = await self._enqueue_as_token(conn, params)
            finally:
                await self.apool.putconn(conn)
        except psycopg.OperationalError as exc:  # no connection (as connection() says it)
            if exc.sqlstate:
                raise translate(exc) from exc
            raise DatabaseUnavailable(f"could not connect to {self.target.display}: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise DatabaseUnavailable(f"no database connection within {POOL_GET_TIMEOUT_S:g} s") from exc
            raise
        if result.status != pq.ExecStatus.TUPLES_OK:
            error = psycopg.errors.error_from_result(result, encoding="utf-8")
            raise self._refused(error, client) from None if error.sqlstate == "28000" else error
        value = result.get_value(0, 0)
        assert value is not None
        return int(value)

    async def _enqueue_as_token(
        self, conn: psycopg.AsyncConnection[Any], params: list[bytes | None]
    ) -> pq.abc.PGresult:
        """Run the ``enqueue_as_token`` statement on ``conn`` (autocommit, idle); its result."""
        assert conn.autocommit
        pgconn = conn.pgconn
        if not self.target.prepared_statements:
            pgconn.send_query_params(_ENQUEUE_AS_TOKEN_SQL, params)
            return await _result(pgconn)
        if conn not in self._prepared:
            pgconn.send_prepare(_ENQUEUE_AS_TOKEN, _ENQUEUE_AS_TOKEN_SQL)
            prepared = await _result(pgconn)
            if prepared.status != pq.ExecStatus.COMMAND_OK:
                return prepared
            self._prepared.add(conn)
        pgconn.send_query_prepared(_ENQUEUE_AS_TOKEN, params)
        result = await _result(pgconn)
        if result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000":  # the statement went (DEALLOCATE)
            self._prepared.discard(conn)
            return await self._enqueue_as_token(conn, params)
        return result

    def _pipeline_failure(self, exc: psycopg.Error, acting: Any, client: str) -> Exception:
        """The error for a failed run_as pipeline: the token's (401, counted) when act_as_token
        did not return its row, else the statement's, translated."""
        if acting is None or acting.pgresult is None or acting.pgresult.status != pq.ExecStatus.TUPLES_OK:
            return self._refused(exc, client)
        return translate(exc)

    def _admit(self, token: str | None, client: str) -> str:
        """The token, if ``client`` may try one: 429 after too many failures, 401 for none."""
        wait = self.limiter.blocked(client)
        if wait:
            problem = Problem(429, f"token: too many failed authentications; retry in {wait:.0f} s", field="token")
            problem.headers["Retry-After"] = str(int(wait) + 1)
            raise problem
        if not token:
            self.limiter.failed(client)
            raise _unauthenticated("token: missing; send Authorization: Bearer <token>")
        return token

    @staticmethod
    def _act_params(token: str) -> dict[str, str]:
        """act_as_token + SET LOCAL ROLE in one statement (a refused token aborts the
        transaction, which then rolls back: nothing else runs in it)."""
        return {"token": token, "roles": _ROLES_JSON}

    def _refused(self, exc: psycopg.Error, client: str) -> Exception:
        """The error for a failed act_as_token: 401 for a refused token (counted, logged
        without the token), else the translated database error."""
        if exc.sqlstate != "28000":
            return translate(exc)
        self.limiter.failed(client)
        # the token is never logged: only where the attempt came from and why it failed
        log.warning(
            "authentication failed from %s: %s",
            client,
            exc.diag.message_primary,
            extra={"action": "auth_failed", "client": client},
        )
        return _unauthenticated(exc.diag.message_primary or "token: not valid")


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    """End a transaction an error left open or failed (a lost connection: the pool drops it)."""
    if conn.pgconn.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
        with suppress(psycopg.Error):
            conn.execute("ROLLBACK")


async def _result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """Send what libpq holds for ``pgconn`` (non-blocking) and wait on the event loop for the
    one statement's result (the first; the rest up to the end of the exchange are read and
    dropped, so the connection is idle again)."""
    loop = asyncio.get_running_loop()
    while pgconn.flush():
        await _ready(loop, pgconn.socket, write=True)
    first: pq.abc.PGresult | None = None
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                assert first is not None
                return first
            if first is None:
                first = result
        await _ready(loop, pgconn.socket, write=False)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Wait until ``fd`` can be written (or read)."""
    ready = loop.create_future()
    (loop.add_writer if write else loop.add_reader)(fd, ready.set_result, None)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


def _principal(row: Any) -> Principal:
    assert row is not None and row["acting_as"] == ROLE_OF_TOKEN[row["role"]], row
    return Principal(int(row["token_id"]), str(row["role"]), row["tenant_id"], row["name"])


def _unauthenticated(detail: str) -> Problem:
    problem = Problem(401, detail, field="token")
    problem.headers["WWW-Authenticate"] = 'Bearer realm="jobqueue"'
    return problem


def request_token(request: Request) -> str | None:
    """The request's token: ``Authorization: Bearer <token>``, else one a middleware put in
    ``request.state.jobqueue_token`` (the dashboard's session cookie). Never a URL parameter."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise _unauthenticated("token: the Authorization header must be 'Bearer <token>'")
    token = getattr(request.state, "jobqueue_token", None)
    return str(token) if token else None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def web_database(request: Request) -> WebDatabase:
    db: WebDatabase = request.app.state.jobqueue_db
    return db


def db_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: the request's database session (see :meth:`WebDatabase.session`).
    Once the token is verified (401 first), refuses what FastAPI would let through: a query
    parameter the route does not take (``?stat=pending`` would list every job) and a body
    that is not ``application/json``."""
    with web_database(request).session(request_token(request), client=client_address(request)) as session:
        refuse_what_the_route_does_not_take(request)
        yield session


def refuse_what_the_route_does_not_take(request: Request) -> None:
    """422 naming a query parameter the route does not declare; 415 for a body sent as
    anything but JSON (FastAPI parses a ``text/plain`` body as JSON all the same)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is not None:
        allowed = _query_names(dependant)
        for name in request.query_params:
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise Problem(422, f"{name}: not a query parameter of this endpoint (it takes: {known})", field=name)
    if request.method in ("POST", "PUT", "PATCH") and _has_body(request):
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise Problem(415, f"Content-Type: the body must be application/json, not {kind or 'unnamed'}",
                          field="Content-Type")  # fmt: skip


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {str(p.alias) for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length.strip() not in ("", "0"))


async def admitted_token(request: Request) -> str:
    """FastAPI dependency of the one-round-trip routes (:meth:`WebDatabase.run_as`): the
    request's token once the checks that need no database passed (429 for a client with
    too many failures, 401 for a missing or malformed Authorization header). Runs before
    the body is validated; should the body then be refused, the validation error handler
    first verifies the token (``request.state.jobqueue_verify``), so a request with a bad
    token gets 401 whatever its body, as with :func:`db_session`."""
    db = web_database(request)
    client = client_address(request)
    token = db._admit(request_token(request), client)  # no I/O: on the event loop, no thread hop
    request.state.jobqueue_verify = lambda: verify_token(db, token, client=client)
    try:
        refuse_what_the_route_does_not_take(request)  # before the body is parsed
    except Problem:
        await run_in_threadpool(request.state.jobqueue_verify)  # a bad token: 401 first
        raise
    return token


def verify_token(db: WebDatabase, token: str, *, client: str = "?") -> Principal:
    """Check a token (e.g. at the dashboard's sign-in) without doing anything as it."""
    with db.session(token, client=client) as session:
        return session.principal


__all__ = [
    "ROLE_OF_TOKEN",
    "TOKEN_ROLES",
    "WEB_ROLE",
    "BoundQueue",
    "FailedAuthLimiter",
    "Principal",
    "Session",
    "WebDatabase",
    "admitted_token",
    "client_address",
    "db_session",
    "refuse_what_the_route_does_not_take",
    "request_token",
    "verify_token",
    "web_database",
]
