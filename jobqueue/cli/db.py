"""``jobqueue migrate`` and ``jobqueue db``: the schema, and the embedded PostgreSQL.

These verbs work on a database that may not be migrated yet (or not answer), so they use
the resolved target and :mod:`jobqueue.migrations` / :mod:`jobqueue.embedded` directly,
never ``Context.queue()`` (which refuses an out-of-date schema).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from jobqueue import migrations
from jobqueue.cli._context import Context, pass_context
from jobqueue.config import DatabaseTarget
from jobqueue.errors import JobQueueError


@click.command()
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
    found = migrations.upgrade(target)
    head = migrations.state(target).head
    if found == head:
        click.echo(f"already at {head}")
    else:
        click.echo(f"migrated {target.display} from {found or 'nothing'} to {head}")


@click.group()
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
        info.update(probe(target))
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


def probe(target: DatabaseTarget) -> dict[str, Any]:
    """Whether ``target`` answers, and its server and schema versions (or the error)."""
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
