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
changes nothing. Failed sign-ins are counted per client address (``FailedAuthLimiter``) and
logged without the token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import Request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

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
    "operator": "jobqueue_admin",
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
        self.pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            target.url,
            min_size=1,
            max_size=pool_size,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "application_name": "jobqueue-web",
                **target.connect_kwargs(),
                # unprepared: each list filter gets a plan for its own values (index scans)
                "prepare_threshold": None,
            },
            timeout=POOL_GET_TIMEOUT_S,
            name="jobqueue-web",
            open=False,
        )

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

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
        wait = self.limiter.blocked(client)
        if wait:
            problem = Problem(429, f"token: too many failed authentications; retry in {wait:.0f} s", field="token")
            problem.headers["Retry-After"] = str(int(wait) + 1)
            raise problem
        if not token:
            self.limiter.failed(client)
            raise _unauthenticated("token: missing; send Authorization: Bearer <token>")
        with self.connection() as conn, conn.transaction():
            principal = self._act_as(conn, token, client)
            yield Session(principal, conn, BoundQueue(conn, self.target))

    def _act_as(self, conn: psycopg.Connection[dict[str, Any]], token: str, client: str) -> Principal:
        """act_as_token and SET LOCAL ROLE in one round trip (a refused token aborts the
        transaction, which then rolls back: nothing else runs in it)."""
        try:
            row = conn.execute(query("act_as_token"), {"token": token, "roles": _ROLES_JSON}).fetchone()
        except psycopg.Error as exc:
            if exc.sqlstate == "28000":
                self.limiter.failed(client)
                # the token is never logged: only where the attempt came from and why it failed
                log.warning(
                    "authentication failed from %s: %s",
                    client,
                    exc.diag.message_primary,
                    extra={"action": "auth_failed", "client": client},
                )
                raise _unauthenticated(exc.diag.message_primary or "token: not valid") from None
            raise translate(exc) from exc
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
    """FastAPI dependency: the request's database session (see :meth:`WebDatabase.session`)."""
    with web_database(request).session(request_token(request), client=client_address(request)) as session:
        yield session


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
    "client_address",
    "db_session",
    "request_token",
    "verify_token",
    "web_database",
]
