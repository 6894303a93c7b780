"""``jobqueue worker`` runs jobs; ``jobqueue workers`` lists the processes that do.

``worker`` loads the user's :class:`~jobqueue.client.JobQueue` (``--app module:object``),
turns the options into a :class:`~jobqueue.worker.WorkerConfig` and calls ``run_worker``;
everything a worker does lives in :mod:`jobqueue.worker`.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import print_rows
from jobqueue.cli._params import json_option
from jobqueue.reports import REPORT_INTERVAL_S
from jobqueue.worker import CONCURRENCY, POLL_INTERVAL_S, RECONCILE_INTERVAL_S, SHUTDOWN_TIMEOUT_S, WORKER_HEARTBEAT_S

if TYPE_CHECKING:
    from jobqueue.client import JobQueue


def load_app(spec: str) -> JobQueue:
    """``module:object`` -> the JobQueue it names (an instance, or a callable returning one)."""
    import importlib

    from jobqueue.client import JobQueue

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter("expected module:object, e.g. myapp.tasks:jq", param_hint="--app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="--app") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}", param_hint="--app")
    if not isinstance(obj, JobQueue) and callable(obj):
        obj = obj()
    if not isinstance(obj, JobQueue):
        raise click.BadParameter(f"{spec} is not a jobqueue.JobQueue", param_hint="--app")
    return obj


@click.command()
@click.option(
    "--app",
    "-a",
    "app_spec",
    required=True,
    envvar="JOBQUEUE_APP",
    show_envvar=True,
    metavar="MODULE:OBJECT",
    help="The JobQueue whose tasks this worker runs.",
)
@click.option(
    "--queues",
    "-q",
    default="default",
    show_default=True,
    envvar="JOBQUEUE_QUEUES",
    show_envvar=True,
    help="Comma-separated queues to claim from.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 10_000),
    default=CONCURRENCY,
    show_default=True,
    envvar="JOBQUEUE_CONCURRENCY",
    show_envvar=True,
    help="Jobs run at once.",
)
@click.option(
    "--burst", is_flag=True, envvar="JOBQUEUE_BURST", show_envvar=True, help="Exit once nothing is left to claim."
)
@click.option("--name", envvar="JOBQUEUE_WORKER_NAME", show_envvar=True, help="Worker id (default host:pid:random).")
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(0, 86_400),
    default=SHUTDOWN_TIMEOUT_S,
    show_default=True,
    envvar="JOBQUEUE_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    help="Seconds running jobs get to finish after SIGTERM before they are handed back.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.01, 3600),
    default=POLL_INTERVAL_S,
    show_default=True,
    envvar="JOBQUEUE_POLL_INTERVAL",
    show_envvar=True,
    help="Seconds between polls when idle.",
)
@click.option(
    "--no-listen",
    is_flag=True,
    envvar="JOBQUEUE_NO_LISTEN",
    show_envvar=True,
    help="Do not LISTEN for notifications (poll only; for PgBouncer transaction pooling).",
)
@click.option(
    "--no-alerts",
    is_flag=True,
    envvar="JOBQUEUE_NO_ALERTS",
    show_envvar=True,
    help="Do not run alert notifications (queue jobqueue.alerts, type jobqueue.notify), which every worker "
    "claims besides QUEUES by default.",
)
@click.option(
    "--listen-url",
    metavar="URL",
    default=None,
    envvar="JOBQUEUE_LISTEN_URL",
    show_envvar=True,
    help="A direct PostgreSQL URL for LISTEN when the database URL goes through PgBouncer in transaction mode "
    "(default: the database URL).",
)
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(1, 43_200),
    default=None,
    envvar="JOBQUEUE_VISIBILITY_TIMEOUT",
    show_envvar=True,
    help="Lease seconds per claim (default: the job's, then its queue's, then 30).",
)
@click.option(
    "--reconcile-interval",
    type=click.FloatRange(0, 86_400),
    default=RECONCILE_INTERVAL_S,
    show_default=True,
    envvar="JOBQUEUE_RECONCILE_INTERVAL",
    show_envvar=True,
    help="Seconds between reconcile runs by this worker (0: never; then run `jobqueue reconcile`).",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(0.1, 3600),
    default=WORKER_HEARTBEAT_S,
    show_default=True,
    envvar="JOBQUEUE_HEARTBEAT_INTERVAL",
    show_envvar=True,
    help="Seconds between heartbeats of this worker's row (the worker_down alert watches them).",
)
@click.option(
    "--report-interval",
    type=click.FloatRange(0, 86_400),
    default=REPORT_INTERVAL_S,
    show_default=True,
    envvar="JOBQUEUE_REPORT_INTERVAL",
    show_envvar=True,
    help="Seconds between INFO summaries (jobs done, failed, retried) and checks for pending job types "
    "no running worker handles (0: never).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="JOBQUEUE_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    envvar="JOBQUEUE_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(["text", "json"]),
)
@pass_context
def worker(
    ctx: Context,
    app_spec: str,
    queues: str,
    concurrency: int,
    burst: bool,
    name: str | None,
    shutdown_timeout: float,
    poll_interval: float,
    no_listen: bool,
    no_alerts: bool,
    listen_url: str | None,
    visibility_timeout: float | None,
    reconcile_interval: float,
    heartbeat_interval: float,
    report_interval: float,
    log_level: str,
    log_format: str,
) -> None:
    """Run jobs: claim from QUEUES (and jobqueue.alerts, the alert notifications, unless --no-alerts), run
    their handlers, acknowledge. SIGTERM stops gracefully."""
    from jobqueue import logs
    from jobqueue.worker import WorkerConfig

    logs.configure(log_level, log_format)
    jq = load_app(app_spec)
    if ctx.database_url:
        jq.use_database(ctx.database_url)
    if ctx.prepared_statements is not None:
        jq.use_prepared_statements(ctx.prepared_statements)
    names = tuple(q.strip() for q in queues.split(",") if q.strip())
    config = WorkerConfig(
        queues=names,
        concurrency=concurrency,
        name=name,
        burst=burst,
        poll_interval_s=poll_interval,
        listen=not no_listen,
        shutdown_timeout_s=shutdown_timeout,
        visibility_timeout_s=visibility_timeout,
        reconcile_interval_s=reconcile_interval,
        listen_url=listen_url,
        report_interval_s=report_interval,
        alerts=not no_alerts,
        heartbeat_interval_s=heartbeat_interval,
    )
    try:
        code = jq.run_worker(config)
    finally:
        jq.close()
    sys.exit(code)


WORKER_COLUMNS = (
    ("worker_id", "worker"),
    ("tenant_id", "tenant"),
    ("status", "status"),
    ("host", "host"),
    ("pid", "pid"),
    ("queues", "queues"),
    ("concurrency", "slots"),
    ("jobs_done", "jobs done"),
    ("started_at", "started (UTC)"),
    ("last_seen_at", "last seen (UTC)"),
)


@click.group()
def workers() -> None:
    """Worker processes, as they register and heartbeat."""


@workers.command("list")
@json_option()
@pass_context
def workers_list(ctx: Context, as_json: bool) -> None:
    """Workers that are running or stopped recently."""
    print_rows(as_json, "workers", WORKER_COLUMNS, ctx.queue().workers())
