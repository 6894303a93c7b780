"""The `jobqueue` command: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from jobqueue import migrations
from jobqueue.config import DatabaseTarget, resolve_database
from jobqueue.errors import JobQueueError

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
        info.update(
            home=str(status.home), initialized=status.initialized, running=status.running, pid=status.pid
        )
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
    click.echo(
        f"server: PostgreSQL {info.get('server_version')}, jobqueue schema {info.get('schema_version')}"
    )


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
