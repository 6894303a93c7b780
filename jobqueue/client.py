"""The Python face of the SQL API: enqueue (also inside your own transaction), reads, admin.

Every call goes through a named statement in ``sql/queries.sql`` that calls the same public
SQL functions other services call; nothing here re-implements queue logic.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from jobqueue.alerting import AlertMethods
from jobqueue.config import CONNECT_TIMEOUT_S, DatabaseTarget, WorkerConfig, resolve_database
from jobqueue.db import check_schema, connect, translate
from jobqueue.errors import DatabaseUnavailable, InvalidInput, JobNotFound, JobQueueError, SchemaOutOfDate
from jobqueue.models import ErrorClass, Job, Priority
from jobqueue.retry import RetryCallable, as_timedelta
from jobqueue.schedules import ScheduleMethods
from jobqueue.sql import query
from jobqueue.tasks import ENQUEUE_OPTIONS, Registry, TaskDecorator

POOL_MAX_SIZE = 10
#: Keep trying to reconnect for as long as the process lives: a queue must outlast outages.
POOL_RECONNECT_TIMEOUT_S = 365 * 24 * 3600.0
#: Longest wait between two attempts to replace a lost pooled connection. psycopg_pool's own
#: back-off doubles without bound (1, 2, 4, 8, 16 s ...): after a 10 s outage its next
#: attempt came 15 s later, after 20 s 31 s later, and every caller waited for it.
POOL_RECONNECT_MAX_DELAY_S = 2.0
#: A pooled connection idle for longer than this is checked (an empty query) before use;
#: one returned more recently was working a moment ago and is used at once. Checking every
#: checkout costs a round trip and a transaction per enqueue, claim and acknowledgement.
POOL_CHECK_IDLE_S = 5.0
POOL_GET_TIMEOUT_S = 30.0
#: At or above this many jobs, enqueue_many loads them with COPY instead of one JSON array.
COPY_THRESHOLD = 1000

_INTERVAL_OPTIONS = ("delay", "timeout", "visibility_timeout")

# Aliases: inside JobQueue, `list` is a method name.
Rows = list[dict[str, Any]]
Tuples = list[tuple[Any, ...]]
Ids = list[int]
Jobs = list[Job]
_JSON_OPTIONS = ("retry_policy", "metadata")


class ReconnectAttempt(AttemptWithBackoff):
    """psycopg_pool's reconnection back-off, capped at POOL_RECONNECT_MAX_DELAY_S.

    Delays: 1 s (± 10 %), doubling, then a random wait in [cap / 2, cap] for as long as the
    server stays away, so a fleet of workers comes back within ~cap seconds of the server
    without knocking on it in step."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        if self.delay > POOL_RECONNECT_MAX_DELAY_S:
            self.delay = POOL_RECONNECT_MAX_DELAY_S * (0.5 + random.random() / 2)


class _Pool(ConnectionPool[psycopg.Connection[dict[str, Any]]]):
    """A psycopg_pool with a capped reconnection back-off (:class:`ReconnectAttempt`) that
    notes when each connection came back, for :func:`_check_if_idle`. (A pool ``reset``
    hook would do that too, but makes psycopg_pool return every connection through a worker
    thread: a thread hand-off per enqueue.)

    When one idle connection fails its check, the others most likely died with it (a server
    restart, a failover): all of them are checked at once, on a thread of their own, instead
    of being met one by one, each behind psycopg_pool's doubling pause (1, 2, 4, 8 ... s),
    which made the first call of an idle pool of six time out after a restart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sweeping = threading.Lock()
        super().__init__(*args, check=self._check_idle, **kwargs)

    def _check_idle(self, conn: psycopg.Connection[Any]) -> None:
        try:
            _check_if_idle(conn)
        except Exception:
            if self._sweeping.acquire(blocking=False):
                threading.Thread(target=self._sweep, name="jobqueue-pool-sweep", daemon=True).start()
            raise

    def _sweep(self) -> None:
        try:
            self.check()  # takes every idle connection out at once; replaces the broken ones
        except Exception:  # the pool closed meanwhile: nothing to sweep
            pass
        finally:
            self._sweeping.release()

    def putconn(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        conn._jobqueue_idle_since = time.monotonic()  # type: ignore[attr-defined]
        super().putconn(conn)

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # The first failure of a replacement starts the back-off; psycopg_pool hands the
        # same attempt object on to each rescheduled try, so the cap holds for all of them.
        super()._add_connection(attempt or ReconnectAttempt(timeout=self.reconnect_timeout), growing)


def _check_if_idle(conn: psycopg.Connection[Any]) -> None:
    """Pool check hook: a closed connection fails at once; a long-idle one is pinged."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the pooled connection is closed")
    since = getattr(conn, "_jobqueue_idle_since", None)
    if since is None or time.monotonic() - since > POOL_CHECK_IDLE_S:
        ConnectionPool.check_connection(conn)


class JobQueue(ScheduleMethods, AlertMethods):
    """A handle on one jobqueue database.

    ``JobQueue()`` resolves the database like the CLI (``JOBQUEUE_DATABASE_URL``,
    ``DATABASE_URL``, else the embedded server). Connections come from a pool opened on
    first use.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        pool_size: int = POOL_MAX_SIZE,
        error_classes: Mapping[type[BaseException], ErrorClass | str] | None = None,
        application_name: str | None = None,
        pool_timeout: float = POOL_GET_TIMEOUT_S,
        prepared_statements: bool | None = None,
    ) -> None:
        self._database_url = database_url
        #: None: the URL's ``prepared_statements`` parameter, else $JOBQUEUE_PREPARED_STATEMENTS,
        #: else on (see :func:`jobqueue.config.resolve_database`).
        self._prepared_statements = prepared_statements
        #: Seconds a call waits for a pooled connection before DatabaseUnavailable.
        self.pool_timeout = pool_timeout
        #: Shown in pg_stat_activity (default: $PGAPPNAME, else "jobqueue").
        self.application_name = application_name or os.environ.get("PGAPPNAME") or "jobqueue"
        self._target: DatabaseTarget | None = None
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] | None = None
        self.pool_size = pool_size
        self.registry = Registry()
        #: Exception type -> error class, consulted before the defaults (see retry.classify).
        self.error_classes: dict[type[BaseException], ErrorClass | str] = dict(error_classes or {})

    # -- connections -------------------------------------------------------------------------

    def use_database(self, url: str) -> None:
        """Point this handle at another database (before first use; the CLI's --database-url)."""
        self.close()
        self._database_url = url
        self._target = None

    def use_prepared_statements(self, enabled: bool) -> None:
        """Turn psycopg's server-side prepared statements on or off for every connection
        this handle makes (before first use; the CLI's --[no-]prepared-statements). Off is
        needed behind PgBouncer < 1.21 in transaction mode, or without
        ``max_prepared_statements``."""
        self.close()
        self._prepared_statements = enabled
        self._target = None

    @property
    def target(self) -> DatabaseTarget:
        if self._target is None:
            self._target = resolve_database(self._database_url, prepared_statements=self._prepared_statements)
        return self._target

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
        if self._pool is None:
            self._pool = _Pool(
                self.target.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    "connect_timeout": CONNECT_TIMEOUT_S,
                    "application_name": self.application_name,
                    **self.target.connect_kwargs(),
                },
                reconnect_timeout=POOL_RECONNECT_TIMEOUT_S,
                timeout=self.pool_timeout,
                name="jobqueue",
                open=True,
            )
        return self._pool

    def connection(self) -> psycopg.Connection[dict[str, Any]]:
        """A new autocommit connection (not pooled), e.g. for LISTEN."""
        return connect(self.target)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_schema(self) -> int:
        with self._conn() as conn:
            return check_schema(conn, self.target)

    # -- tasks -------------------------------------------------------------------------------

    def task(
        self,
        name: str | None = None,
        *,
        queue: str | None = None,
        priority: int | str | Priority | None = None,
        max_attempts: int | None = None,
        retry: Mapping[str, Any] | RetryCallable | None = None,
        timeout: float | timedelta | None = None,
        visibility_timeout: float | timedelta | None = None,
        unique: bool | Callable[..., str] = False,
        schedule: str | None = None,
        tz: str = "UTC",
        missed: str = "skip",
        max_backfill: int = 100,
    ) -> TaskDecorator:
        """Register a handler: ``@jq.task(name="email.send", queue="email", retry={...})``.

        ``retry`` is a policy dict (strategy, initial_delay, multiplier, max_delay, delays,
        jitter) stored with each job, or a callable ``(attempt, exc) -> seconds`` the worker
        applies. ``unique=True`` enqueues at most one live job per payload; a callable returns
        the unique key from the payload. ``schedule="*/5 * * * *"`` (with ``tz``, ``missed``,
        ``max_backfill``) also declares a periodic schedule named after the task that enqueues
        it with an empty payload (jobqueue.schedules).
        """
        options = {
            "queue": queue,
            "priority": priority,
            "max_attempts": max_attempts,
            "timeout": timeout,
            "visibility_timeout": visibility_timeout,
        }
        periodic = {"cron": schedule, "tz": tz, "missed": missed, "max_backfill": max_backfill} if schedule else None
        return TaskDecorator(self, name, options, retry, unique, periodic)

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue(
        self, type: str, payload: Mapping[str, Any] | None = None, *, connection: Any = None, **options: Any
    ) -> int:
        """Enqueue one job; returns its id (a live duplicate's id for a repeated unique_key).

        Pass ``connection`` (a psycopg Connection, SQLAlchemy Connection or Session) to
        enqueue inside your transaction: the job exists if and only if it commits.
        """
        params = enqueue_params(type, payload, options)
        rows = self._run(connection, "enqueue", params)
        return int(rows[0][0])

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]], *, connection: Any = None) -> Ids:
        """Enqueue many jobs, all or nothing; returns their ids in order.

        Each job is a mapping with ``type``, ``payload`` and any enqueue option. Large
        batches are loaded with COPY into a temporary table, then handed to
        ``jobqueue.enqueue_many`` in the same transaction.
        """
        jobs = list(jobs)
        if connection is None and len(jobs) >= COPY_THRESHOLD:
            plain = plain_rows(jobs)
            if plain is not None:
                return self._enqueue_columns(plain)
        documents = [job_document(i, job) for i, job in enumerate(jobs)]
        if not documents:
            return []
        if connection is None and len(documents) >= COPY_THRESHOLD:
            return self._enqueue_copy(documents)
        text = "[" + ",".join(documents) + "]"
        rows = self._run(connection, "enqueue_many", {"jobs": text})
        return [int(row[0]) for row in rows]

    def _enqueue_copy(self, documents: list[str]) -> Ids:
        with self._conn() as conn, self._translated(conn), conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS jobqueue_copy_batch (n int, job jsonb) ON COMMIT DELETE ROWS")
            with cur.copy("COPY jobqueue_copy_batch (n, job) FROM STDIN") as copy:
                for n, doc in enumerate(documents):
                    copy.write_row((n, doc))
            rows = cur.execute(
                "SELECT id FROM jobqueue.enqueue_many("
                "(SELECT jsonb_agg(job ORDER BY n) FROM jobqueue_copy_batch)) AS id"
            ).fetchall()
        return [int(row[0]) for row in rows]

    def _enqueue_columns(self, rows: list[tuple[Any, ...]]) -> Ids:
        """Plain jobs: COPY typed columns, then one enqueue_batch call over their arrays."""
        with self._conn() as conn, self._translated(conn), conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS jobqueue_copy_plain (n int, type text, payload jsonb, queue text,"
                " priority int, max_attempts int) ON COMMIT DELETE ROWS"
            )
            columns = "n, type, payload, queue, priority, max_attempts"
            with cur.copy(f"COPY jobqueue_copy_plain ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            result = cur.execute(
                "SELECT e.id FROM (SELECT array_agg(s.type) AS t, array_agg(s.payload) AS p, array_agg(s.queue) AS q,"
                " array_agg(s.priority) AS pr, array_agg(s.max_attempts) AS m"
                " FROM (SELECT * FROM jobqueue_copy_plain ORDER BY n) AS s) AS a,"
                " jobqueue.enqueue_batch(a.t, a.p, a.q, a.pr, a.m) AS e(id)"
            ).fetchall()
        return [row[0] for row in result]

    # -- reads -------------------------------------------------------------------------------

    def get(self, id: int) -> Job:
        rows = self._fetch("get_job", {"id": id})
        if not rows:
            raise JobNotFound(f"job {id} not found")
        return Job.from_row(rows[0])

    def list(
        self,
        *,
        states: Sequence[str] | None = None,
        queue: str | None = None,
        type: str | None = None,
        tenant_id: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
        tag: str | None = None,
        created_by: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
    ) -> Jobs:
        """Jobs newest first; page with ``before_id`` = the last id of the previous page.
        ``tag``: jobs carrying it; ``created_*``/``finished_*``: half-open time ranges
        [after, before)."""
        if limit < 1 or limit > 10_000:
            raise InvalidInput("limit: must be between 1 and 10000", field="limit")
        params = _list_params(locals())
        return [Job.from_row(row) for row in self._fetch("list_jobs", {**params, "limit": limit})]

    def count(self, *, cap: int = 10_000, **filters: Any) -> tuple[int, bool]:
        """How many jobs :meth:`list` would return for these filters, counting at most ``cap``
        (so a count never reads a million rows): ``(n, more)`` where ``more`` says there are
        more than ``cap``."""
        if cap < 1 or cap > 10_000:
            raise InvalidInput("cap: must be between 1 and 10000", field="cap")
        params = _list_params({"states": None, "before_id": None, **filters})
        sql = f"SELECT count(*) AS n FROM ({query('list_jobs')}) AS page"  # a named statement, not input
        with self._conn() as conn, self._translated(conn):
            row = conn.execute(sql, {**params, "limit": cap + 1}).fetchone()
        n = int(row["n"]) if row else 0
        return min(n, cap), n > cap

    def delete(self, id: int) -> str:
        """Delete a finished (completed, cancelled) or dead (dead_letter, archived) job; returns
        the state it had (its events and log lines age out with reconcile's pruning). A live
        job raises ConfigurationError (cancel it first); an unknown id JobNotFound. Needs
        jobqueue_admin."""
        return str(self._fetch("delete_job", {"id": id})[0]["state"])

    def logs(self, id: int) -> Rows:
        return self._fetch("job_logs", {"id": id})

    def dead_letters(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        reason: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> Rows:
        return self._fetch(
            "list_dead_letters",
            {"queue": queue, "type": type, "reason": reason, "before_id": before_id, "limit": limit},
        )

    def stats(self) -> Rows:
        return self._fetch("queue_stats", {})

    def metrics(self, window: float | timedelta = 3600) -> Rows:
        return self._fetch("metrics", {"window": as_timedelta(window)})

    def health(
        self,
        *,
        max_xmin_age: float | timedelta | None = None,
        max_xmin_xids: int | None = None,
        max_reconcile_age: float | timedelta | None = None,
        max_lease_overdue: float | timedelta | None = None,
        max_notify_queue_usage: float | None = None,
        max_pending_age: float | timedelta | None = None,
        max_dead_letters: int | None = None,
        max_expired_leases: int | None = None,
    ) -> Rows:
        """The alert checks of ``jobqueue.health()``: one row per check with ``check_name``,
        ``value``, ``threshold``, ``alert`` and ``detail``. A threshold left at None takes the
        SQL default (xmin age 5 min / 100,000,000 xids, reconcile age 1 min, lease overdue
        1 min, NOTIFY queue 50 %; pending age, dead letters and expired leases off).
        Durations are seconds or timedeltas. Bad thresholds raise InvalidInput naming the
        parameter."""
        return self._fetch(
            "health",
            {
                "max_xmin_age": as_timedelta(max_xmin_age),
                "max_xmin_xids": max_xmin_xids,
                "max_reconcile_age": as_timedelta(max_reconcile_age),
                "max_lease_overdue": as_timedelta(max_lease_overdue),
                "max_notify_queue_usage": max_notify_queue_usage,
                "max_pending_age": as_timedelta(max_pending_age),
                "max_dead_letters": max_dead_letters,
                "max_expired_leases": max_expired_leases,
            },
        )

    def queues(self) -> Rows:
        return self._fetch("list_queues", {})

    def workers(self) -> Rows:
        return self._fetch("list_workers", {})

    # -- admin -------------------------------------------------------------------------------

    def cancel(self, id: int, reason: str | None = None) -> str:
        return str(self._fetch("cancel", {"id": id, "reason": reason})[0]["status"])

    def retry(self, id: int) -> int:
        return int(self._fetch("retry", {"id": id})[0]["id"])

    def redrive(self, filter: Mapping[str, Any] | None = None, *, limit: int = 1000, dry_run: bool = False) -> Ids:
        rows = self._fetch(
            "redrive", {"filter": dumps(dict(filter or {}), "filter"), "limit": limit, "dry_run": dry_run}
        )
        return [int(row["id"]) for row in rows]

    def archive_dead_letters(self, max_age_days: int | None = None) -> int:
        return int(self._fetch("archive_dead_letters", {"max_age_days": max_age_days})[0]["archived"])

    def purge_dead_letters(self, filter: Mapping[str, Any] | None = None, *, limit: int = 1000) -> int:
        rows = self._fetch("purge_dead_letters", {"filter": dumps(dict(filter or {}), "filter"), "limit": limit})
        return int(rows[0]["purged"])

    def pause(self, queue: str) -> None:
        self._fetch("pause_queue", {"queue": queue})

    def resume(self, queue: str) -> None:
        self._fetch("resume_queue", {"queue": queue})

    def configure_queue(self, queue: str, **settings: Any) -> dict[str, Any]:
        """Set queue settings (max_size, visibility_timeout, max_attempts, retry_policy, ...)."""
        clean = {k: (seconds(v) if isinstance(v, timedelta) else v) for k, v in settings.items()}
        rows = self._fetch("configure_queue", {"queue": queue, "settings": dumps(clean, "settings")})
        return dict(rows[0]["settings"] or {})

    def set_retry_policy(self, type: str, policy: Mapping[str, Any]) -> None:
        self._fetch("set_retry_policy", {"type": type, "policy": dumps(dict(policy), "policy")})

    # -- API tokens (jobqueue serve: docs/web.md) ---------------------------------------------

    def create_token(
        self,
        role: str,
        *,
        tenant_id: str | None = None,
        expires_in: float | timedelta | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Create an API token for ``role`` (viewer, producer, operator, admin), confined to
        ``tenant_id`` when given. Returns ``id``, ``token`` (the only time it is shown: only
        its sha256 is stored), ``role``, ``tenant_id``, ``name``, ``expires_at``. Needs
        jobqueue_admin mapped to no tenant."""
        rows = self._fetch(
            "create_token",
            {"role": role, "tenant_id": tenant_id, "expires_in": as_timedelta(expires_in), "name": name},
        )
        return {**rows[0], "role": role, "tenant_id": tenant_id, "name": name}

    def tokens(self) -> Rows:
        """Every API token's id, name, role, tenant, creation, expiry, last use and revocation
        (never the token or its hash)."""
        return self._fetch("list_tokens", {})

    def revoke_token(self, id: int) -> bool:
        """Revoke an API token at once; False when it was already revoked."""
        return bool(self._fetch("revoke_token", {"id": id})[0]["revoked"])

    # -- tenants (multi-tenant mode: docs/sql-api.md "Multi-tenant mode") --------------------

    def set_tenant_role(self, role_name: str, tenant_id: str) -> None:
        """Confine login role ``role_name`` to ``tenant_id``: its jobs get that tenant and it
        sees only that tenant's jobs. Needs an unmapped jobqueue_admin role and a schema owner
        without SUPERUSER/BYPASSRLS (else ConfigurationError)."""
        self._fetch("set_tenant_role", {"role_name": role_name, "tenant_id": tenant_id})

    def unset_tenant_role(self, role_name: str) -> bool:
        """Remove a login role's tenant mapping; False when it had none."""
        return bool(self._fetch("unset_tenant_role", {"role_name": role_name})[0]["removed"])

    def tenant_roles(self) -> Rows:
        """Login roles and their tenants (a mapped caller sees its own tenant's only)."""
        return self._fetch("list_tenant_roles", {})

    def set_tenant_rate_limit(self, tenant_id: str, rate: float, burst: int | None = None) -> None:
        """Limit a tenant's enqueues to ``rate`` jobs per second with bursts of ``burst``
        (default: one second's worth). Over it, enqueue raises RateLimited."""
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise InvalidInput("rate: must be a finite number of jobs per second", field="rate")
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
            raise InvalidInput("burst: must be an integer", field="burst")
        self._fetch("set_tenant_rate_limit", {"tenant_id": tenant_id, "rate": float(rate), "burst": burst})

    def clear_tenant_rate_limit(self, tenant_id: str) -> bool:
        """Remove a tenant's enqueue rate limit; False when it had none."""
        return bool(self._fetch("clear_tenant_rate_limit", {"tenant_id": tenant_id})[0]["removed"])

    def tenant_rate_limits(self) -> Rows:
        """Rate limits per tenant with the tokens available now."""
        return self._fetch("list_tenant_rate_limits", {})

    def reconcile(self, *, batch: int = 1000, dry_run: bool = False) -> dict[str, Any]:
        rows = self._fetch("reconcile", {"batch": batch, "dry_run": dry_run})
        return dict(rows[0]["summary"])

    # -- worker ------------------------------------------------------------------------------

    def run_worker(self, config: WorkerConfig | None = None, **options: Any) -> int:
        """Run a worker in this process until it is stopped (or drained, with burst=True).

        Returns the exit code: 0 after a clean stop.
        """
        from jobqueue.worker import Worker

        cfg = config or WorkerConfig(**options)
        return Worker(self, cfg).run()

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection; an unreachable database becomes DatabaseUnavailable naming it."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            if isinstance(exc, psycopg.OperationalError) and exc.sqlstate:
                raise  # a server-side error on a live connection: translated by the caller
            raise DatabaseUnavailable(f"could not connect to {self.target.display}: {_one_line(exc)}") from exc

    def _fetch(self, name: str, params: Mapping[str, Any]) -> Rows:
        with self._conn() as conn, self._translated(conn):
            cur = conn.execute(query(name), params)
            return cur.fetchall() if cur.description else []

    def _run(self, connection: Any, name: str, params: Mapping[str, Any]) -> Tuples:
        """Run a statement on the caller's connection (their transaction) or a pooled one."""
        sql = query(name)
        if connection is None:
            with self._conn() as conn, self._translated(conn):
                pooled: Tuples = conn.cursor(row_factory=tuple_row).execute(sql, params).fetchall()
                return pooled
        try:
            if isinstance(connection, psycopg.Connection):
                rows: Tuples = connection.cursor(row_factory=tuple_row).execute(sql, params).fetchall()
                return rows
            return _run_sqlalchemy(connection, sql, params)
        except psycopg.Error as exc:
            error = self._translate(exc, None)  # the caller's transaction is aborted: no asking
            raise error from (None if isinstance(error, SchemaOutOfDate) else exc)

    @contextmanager
    def _translated(self, conn: psycopg.Connection[Any] | None) -> Iterator[None]:
        """Run a block on ``conn``, turning psycopg errors into jobqueue errors."""
        try:
            yield
        except psycopg.Error as exc:
            error = self._translate(exc, conn)
            # A missing schema says all there is to say: one line, not two tracebacks.
            raise error from (None if isinstance(error, SchemaOutOfDate) else exc)

    def _translate(self, exc: psycopg.Error, conn: psycopg.Connection[Any] | None) -> JobQueueError:
        """translate(); a statement that met a missing jobqueue object gets check_schema's
        reason (which database, which version, "run `jobqueue migrate`") when ``conn`` (one of
        the pool's, out of the failed transaction) can still ask."""
        error = translate(exc)
        if isinstance(error, SchemaOutOfDate) and conn is not None:
            try:
                check_schema(conn, self.target)
            except SchemaOutOfDate as precise:
                return precise.with_traceback(None)
            except JobQueueError:
                pass
        return error


def _run_sqlalchemy(connection: Any, sql: str, params: Mapping[str, Any]) -> Tuples:
    """A SQLAlchemy Connection or Session: run on its DBAPI connection, inside its transaction."""
    try:
        from sqlalchemy.exc import DBAPIError
        from sqlalchemy.orm import Session
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        raise TypeError("connection must be a psycopg or SQLAlchemy connection") from None
    if isinstance(connection, Session):
        connection = connection.connection()
    if not hasattr(connection, "exec_driver_sql"):
        raise TypeError(f"connection must be a psycopg or SQLAlchemy connection, not {type(connection).__name__}")
    try:
        result = connection.exec_driver_sql(sql, dict(params))
        return [tuple(row) for row in result.fetchall()]
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise translate(exc.orig) from exc
        raise


# -- parameter shaping (pure) --------------------------------------------------------------------


def dumps(value: Any, field: str) -> str:
    """JSON text for the database; NaN, Infinity and non-JSON values are refused by field."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{field}: {exc}", field=field) from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def seconds(value: timedelta) -> float:
    return value.total_seconds()


#: The filters of JobQueue.list / count (the list_jobs statement's parameters but limit).
_LIST_FILTERS = (
    "states",
    "queue",
    "type",
    "tenant_id",
    "before_id",
    "tag",
    "created_by",
    "created_after",
    "created_before",
    "finished_after",
    "finished_before",
)


def _list_params(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(_LIST_FILTERS) - {"self", "limit"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"{name}: unknown filter (known: {', '.join(_LIST_FILTERS)})", field=name)
    params = {name: given.get(name) for name in _LIST_FILTERS}
    params["states"] = list(params["states"]) if params["states"] else None
    return params


def enqueue_params(type: str, payload: Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The named parameters of the ``enqueue`` statement; unknown options refused by name."""
    unknown = set(options) - ENQUEUE_OPTIONS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"{name}: not an enqueue option", field=name)
    if not isinstance(type, str):
        raise InvalidInput("type: must be a string", field="type")
    if payload is not None and not isinstance(payload, Mapping):
        raise InvalidInput("payload: must be a JSON object (a mapping)", field="payload")
    params: dict[str, Any] = {name: None for name in ENQUEUE_OPTIONS}
    params.update({k: v for k, v in options.items() if v is not None})
    params["type"] = type
    params["payload"] = dumps(dict(payload or {}), "payload")
    params["priority"] = priority_param(params["priority"])
    for name in _INTERVAL_OPTIONS:
        params[name] = interval_param(params[name], name)
    for name in _JSON_OPTIONS:
        if params[name] is not None:
            params[name] = dumps(params[name], name)
    if params["tags"] is not None:
        if isinstance(params["tags"], str) or not all(isinstance(t, str) for t in params["tags"]):
            raise InvalidInput("tags: must be a list of strings", field="tags")
        params["tags"] = list(params["tags"])
    if params["depends_on"] is not None:
        deps = list(params["depends_on"])
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in deps):
            raise InvalidInput("depends_on: must be a list of job ids", field="depends_on")
        params["depends_on"] = deps
    for name in ("run_at", "expires_at"):
        value = params[name]
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidInput(f"{name}: must be a timezone-aware datetime", field=name)
    return params


def job_document(index: int, job: Mapping[str, Any]) -> str:
    """One element of an enqueue_many batch as JSON text (intervals as seconds)."""
    if not isinstance(job, Mapping) or "type" not in job:
        raise InvalidInput(f"jobs[{index}]: must be a mapping with a 'type'", field="jobs")
    doc: dict[str, Any] = {}
    for key, value in job.items():
        if key not in ENQUEUE_OPTIONS and key not in ("type", "payload"):
            raise InvalidInput(f"jobs[{index}].{key}: not an enqueue option", field=key)
        if value is None:
            continue
        if key == "priority":
            value = priority_param(value)
        elif key in _INTERVAL_OPTIONS:
            interval = interval_param(value, key)
            value = None if interval is None else interval.total_seconds()
        elif isinstance(value, datetime):
            if value.tzinfo is None:
                raise InvalidInput(f"jobs[{index}].{key}: must be a timezone-aware datetime", field=key)
            value = value.isoformat()
        doc[key] = value
    return dumps(doc, f"jobs[{index}]")


_PLAIN_KEYS = frozenset({"type", "payload", "queue", "priority", "max_attempts"})


def plain_rows(jobs: Sequence[Any]) -> list[tuple[Any, ...]] | None:
    """COPY rows (n, type, payload, queue, priority, max_attempts) when every job is plain:
    only those keys, of the simple types. None otherwise: the general path then checks
    everything and names what is wrong."""
    rows: list[tuple[Any, ...]] = []
    for n, job in enumerate(jobs):
        if not isinstance(job, Mapping) or not _PLAIN_KEYS.issuperset(job):
            return None
        type_, payload = job.get("type"), job.get("payload")
        queue, priority, attempts = job.get("queue"), job.get("priority"), job.get("max_attempts")
        if (
            not isinstance(type_, str)
            or not (payload is None or isinstance(payload, Mapping))
            or not (queue is None or isinstance(queue, str))
            or not (priority is None or (isinstance(priority, int) and not isinstance(priority, bool)))
            or not (attempts is None or (isinstance(attempts, int) and not isinstance(attempts, bool)))
        ):
            return None
        body = dumps(payload, f"jobs[{n}].payload") if payload else "{}"
        rows.append((n, type_, body, queue, None if priority is None else int(priority), attempts))
    return rows


def priority_param(value: Any) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput("priority: must be 0..10 or low, normal, high, critical", field="priority")
    if isinstance(value, Priority):
        return int(value)
    if isinstance(value, int | str):
        return value
    raise InvalidInput("priority: must be 0..10 or low, normal, high, critical", field="priority")


def interval_param(value: Any, name: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{name}: must be a finite number of seconds", field=name)
    try:
        return as_timedelta(value)
    except TypeError as exc:
        raise InvalidInput(f"{name}: {exc}", field=name) from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
