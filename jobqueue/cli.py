"""The `jobqueue` command: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jobqueue import migrations
from jobqueue.config import DatabaseTarget, resolve_database
from jobqueue.errors import JobQueueError
from jobqueue.worker import CONCURRENCY, POLL_INTERVAL_S, RECONCILE_INTERVAL_S, SHUTDOWN_TIMEOUT_S

if TYPE_CHECKING:
    from jobqueue.client import JobQueue

F = TypeVar("F", bound=Callable[..., Any])

DATABASE_URL_HELP = (
    "PostgreSQL URL. Default: $JOBQUEUE_DATABASE_URL, then $DATABASE_URL, "
    "then an embedded PostgreSQL in $JOBQUEUE_HOME (./.jobqueue)."
)


class Context:
    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url

    def target(self, *, start_embedded: bool = True) -> DatabaseTarget:
        return resolve_database(self.database_url, start_embedded=start_embedded)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "JOBQUEUE"})
@click.option("--database-url", metavar="URL", help=DATABASE_URL_HELP, envvar=[])
@click.version_option(package_name="jobqueue")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """jobqueue: a job queue whose whole state lives in PostgreSQL."""
    ctx.obj = Context(database_url)


# -- migrate ---------------------------------------------------------------------------------


@cli.command()
@click.option("--sql", "as_sql", is_flag=True, help="Print the SQL for a DBA instead of running it.")
@click.option("--check", is_flag=True, help="Exit 1 when the database is behind; change nothing.")
@pass_context
def migrate(ctx: Context, as_sql: bool, check: bool) -> None:
    """Upgrade the database schema to the newest revision."""
    if as_sql and check:
        raise click.UsageError("--sql and --check cannot be used together")
    if as_sql:
        click.echo(migrations.upgrade_sql(), nl=False)
        return
    target = ctx.target()
    if check:
        state = migrations.state(target)
        if not state.up_to_date:
            click.echo(f"database is behind: at {state.current or 'nothing'}, head is {state.head}", err=True)
            sys.exit(1)
        click.echo(f"database is up to date at {state.head}")
        return
    before = migrations.state(target)
    migrations.upgrade(target)
    if before.up_to_date:
        click.echo(f"already at {before.head}")
    else:
        click.echo(f"migrated {target.display} from {before.current or 'nothing'} to {before.head}")


# -- db --------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Manage the embedded PostgreSQL (used when no database URL is configured)."""


@db.command("url")
@pass_context
def db_url(ctx: Context) -> None:
    """Print the database URL in use (starting the embedded server if needed)."""
    click.echo(ctx.target().url)


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def db_status(ctx: Context, as_json: bool) -> None:
    """Show where the database is and whether it answers; exit 1 when it does not."""
    from jobqueue.embedded import EmbeddedServer

    try:
        target = ctx.target(start_embedded=False)
    except JobQueueError:
        target = None
    info: dict[str, Any] = {"source": target.source if target else "embedded"}
    if target is None or target.source == "embedded":
        status = EmbeddedServer().status()
        info.update(home=str(status.home), initialized=status.initialized, running=status.running, pid=status.pid)
    info["url"] = target.url if target else None
    info["reachable"] = False
    if target is not None:
        info.update(_probe(target))
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key:>14}: {value}")
    sys.exit(0 if info["reachable"] else 1)


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server."""
    from jobqueue.embedded import EmbeddedServer

    if EmbeddedServer().stop():
        click.echo("embedded server stopped")
    else:
        click.echo("embedded server was not running")


def _probe(target: DatabaseTarget) -> dict[str, Any]:
    from jobqueue.db import connect, schema_version, server_version

    try:
        with connect(target) as conn:
            return {
                "reachable": True,
                "server_version": server_version(conn),
                "schema_version": schema_version(conn),
            }
    except JobQueueError as exc:
        return {"reachable": False, "error": str(exc)}


# -- worker ----------------------------------------------------------------------------------


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


@cli.command()
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
    listen_url: str | None,
    visibility_timeout: float | None,
    reconcile_interval: float,
    log_level: str,
    log_format: str,
) -> None:
    """Run jobs: claim from QUEUES, run their handlers, acknowledge. SIGTERM stops gracefully."""
    from jobqueue import logs
    from jobqueue.worker import WorkerConfig

    logs.configure(log_level, log_format)
    jq = load_app(app_spec)
    if ctx.database_url:
        jq.use_database(ctx.database_url)
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
    )
    try:
        code = jq.run_worker(config)
    finally:
        jq.close()
    sys.exit(code)


# -- demo ------------------------------------------------------------------------------------


@cli.command()
@pass_context
def demo(ctx: Context) -> None:
    """Start the database (embedded by default), migrate it and show its state."""
    target = ctx.target()
    click.echo(f"database: {target.display}")
    migrations.upgrade(target)
    state = migrations.state(target)
    click.echo(f"schema: revision {state.current}")
    info = _probe(target)
    click.echo(f"server: PostgreSQL {info.get('server_version')}, jobqueue schema {info.get('schema_version')}")


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: jobqueue errors become one line on stderr and an exit code."""
    try:
        cli.main(args=argv, prog_name="jobqueue", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except JobQueueError as exc:
        click.echo(f"jobqueue: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
