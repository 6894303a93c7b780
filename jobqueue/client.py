"""The Python face of the SQL API: enqueue (also inside your own transaction), reads, admin.

Every call goes through a named statement in ``sql/queries.sql`` that calls the same public
SQL functions other services call; nothing here re-implements queue logic. The arguments are
shaped into parameters by :mod:`jobqueue.params`; connections come from :mod:`jobqueue.pool`.
"""

from __future__ import annotations

import builtins
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from jobqueue import tracing
from jobqueue.alerting import AlertMethods
from jobqueue.alerts.notify import register as register_notify
from jobqueue.config import CONNECT_TIMEOUT_S, DatabaseTarget, WorkerConfig, resolve_database
from jobqueue.db import check_schema, connect, translate
from jobqueue.errors import DatabaseUnavailable, InvalidInput, JobNotFound, JobQueueError, SchemaOutOfDate
from jobqueue.models import ErrorClass, Job, Priority
from jobqueue.params import dumps, list_params, plain_rows, seconds

# "name as name": exported from here too (mypy --strict), as when they were defined here
from jobqueue.params import enqueue_params as enqueue_params
from jobqueue.params import interval_param as interval_param
from jobqueue.params import job_document as job_document
from jobqueue.params import priority_param as priority_param
from jobqueue.pool import POOL_CHECK_IDLE_S as POOL_CHECK_IDLE_S
from jobqueue.pool import POOL_RECONNECT_MAX_DELAY_S as POOL_RECONNECT_MAX_DELAY_S
from jobqueue.pool import POOL_RECONNECT_TIMEOUT_S, Pool
from jobqueue.pool import ReconnectAttempt as ReconnectAttempt
from jobqueue.retry import RetryCallable, as_timedelta
from jobqueue.schedules import ScheduleMethods
from jobqueue.sql import Rows, query
from jobqueue.tasks import Registry, TaskDecorator

POOL_MAX_SIZE = 10
POOL_GET_TIMEOUT_S = 30.0
#: At or above this many jobs, enqueue_many loads them with COPY instead of one JSON array.
COPY_THRESHOLD = 1000

# Aliases: inside JobQueue, `list` is a method name.
Tuples = list[tuple[Any, ...]]
Ids = list[int]
Jobs = list[Job]


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
        # The built-in task that delivers alert notifications (jobqueue.alerts.notify): every
        # app's workers can run it, so notifications need no deployment of their own.
        register_notify(self)
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
            self._pool = Pool(
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
        with tracing.enqueue_span([options.get("queue") or "default"], 1) as span:
            params = enqueue_params(type, payload, span.inject(options))
            rows = self._run(connection, "enqueue", params)
            span.done([int(rows[0][0])])
        return int(rows[0][0])

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]], *, connection: Any = None) -> Ids:
        """Enqueue many jobs, all or nothing; returns their ids in order.

        Each job is a mapping with ``type``, ``payload`` and any enqueue option. Large
        batches are loaded with COPY into a temporary table, then handed to
        ``jobqueue.enqueue_many`` in the same transaction.
        """
        jobs = list(jobs)
        queues = [str(j.get("queue") or "default") if isinstance(j, Mapping) else "default" for j in jobs]
        with tracing.enqueue_span(queues, len(jobs)) as span:
            ids = self._enqueue_many([span.inject(j) for j in jobs], connection)
            span.done(ids)
        return ids

    def _enqueue_many(self, jobs: list[Mapping[str, Any]], connection: Any) -> Ids:
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
        params = list_params(locals())
        return [Job.from_row(row) for row in self._fetch("list_jobs", {**params, "limit": limit})]

    def count(self, *, cap: int = 10_000, **filters: Any) -> tuple[int, bool]:
        """How many jobs :meth:`list` would return for these filters, counting at most ``cap``
        (so a count never reads a million rows): ``(n, more)`` where ``more`` says there are
        more than ``cap``."""
        if cap < 1 or cap > 10_000:
            raise InvalidInput("cap: must be between 1 and 10000", field="cap")
        params = list_params({"states": None, "before_id": None, **filters})
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

    def counters(self) -> Rows:
        """``jobqueue.counters()``: per queue and job type, monotonic counts of jobs enqueued,
        completed, failed (attempts), retried, dead-lettered and cancelled, ``running`` now, and
        the queue-time and run-time histograms of completed jobs (per-bucket counts over
        :meth:`histogram_buckets`, then one bucket above them, and the sums in seconds)."""
        return self._fetch("counters", {})

    def histogram_buckets(self) -> builtins.list[float]:
        """Upper bounds (seconds) of the histogram buckets of :meth:`counters`."""
        return [float(b) for b in self._fetch("histogram_buckets", {})[0]["bounds"]]

    def open_alerts(self) -> Rows:
        """Open alert incidents (not resolved) counted by ``rule`` and ``severity`` (column ``n``);
        empty when the schema has no ``jobqueue.alerts`` view."""
        if not self._fetch("open_alerts", {})[0]["present"]:
            return []
        return self._fetch("open_alerts_by_rule", {})

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
        """:meth:`jobqueue.sql.StatementRunner._fetch`, on a pooled connection."""
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
