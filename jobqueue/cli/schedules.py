"""`jobqueue schedules add|list|show|pause|resume|remove|next`: periodic schedules.

The verbs over :mod:`jobqueue.schedules` (the job template) and the JobQueue schedule calls;
registered with the others in ``cli/__init__.py``. Every option also reads
JOBQUEUE_SCHEDULES_<VERB>_<OPTION> (e.g. JOBQUEUE_SCHEDULES_ADD_TZ).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import echo_json, print_fields, print_table
from jobqueue.cli._params import POSITIVE_DURATION, PRIORITY, TIMESTAMP, json_option, option, read_payload
from jobqueue.schedules import MISSED_POLICIES, template

SCHEDULE_COLUMNS = [
    ("name", "name"),
    ("cron", "cron"),
    ("tz", "tz"),
    ("next_fire_at", "next fire (UTC)"),
    ("last_fire_at", "last fire (UTC)"),
    ("last_job_id", "last job"),
    ("last_job_state", "state"),
    ("missed", "missed"),
    ("status", "status"),
]


def _status(row: dict[str, Any]) -> str:
    if row.get("paused"):
        return f"paused ({row.get('paused_reason') or 'paused'})"
    return "error" if row.get("last_error") else "active"


def _with_status(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "status": _status(row)}


@click.group()
def schedules() -> None:
    """Periodic schedules: cron expressions fired by `reconcile`, exactly once per tick.

    \b
    Examples:
      jobqueue schedules add nightly-cleanup '0 3 * * *' db.cleanup '{"days": 30}' --tz Europe/Berlin
      jobqueue schedules add heartbeat '* * * * * */10' ping --missed skip
      jobqueue schedules next --cron '*/15 9-17 * * MON-FRI' --tz America/New_York -n 5
    """


@schedules.command("add")
@click.argument("name")
@click.argument("cron")
@click.argument("type_", metavar="TYPE")
@click.argument("payload", required=False, metavar="[PAYLOAD|-|@FILE]")
@option("--tz", default="UTC", show_default=True, help="IANA time zone the expression is read in.")
@option(
    "--missed",
    type=click.Choice(MISSED_POLICIES),
    default="skip",
    show_default=True,
    help="Ticks missed while nothing ran reconcile: skip them, fire the latest, or fire all.",
)
@option(
    "--max-backfill",
    type=click.IntRange(0, 10_000),
    default=100,
    show_default=True,
    help="With --missed all: at most this many missed ticks (the most recent).",
)
@option("--queue", "-q", default=None, help="Queue of the jobs.  [default: default]")
@option("--priority", "-p", type=PRIORITY, default=None, help="Higher runs first.  [default: normal (5)]")
@option("--max-attempts", type=click.IntRange(1, 1000), default=None, help="Attempts before a job is dead-lettered.")
@option("--unique-key", default=None, help="One live job per key: a tick whose previous job still runs folds into it.")
@option("--tag", "tags", multiple=True, metavar="TAG", help="A tag (repeatable).")
@option("--timeout", type=POSITIVE_DURATION, default=None, help="Longest one attempt may run.")
@option("--paused", is_flag=True, default=None, help="Create it paused.")
@json_option()
@pass_context
def schedules_add(
    ctx: Context,
    name: str,
    cron: str,
    type_: str,
    payload: str | None,
    tz: str,
    missed: str,
    max_backfill: int,
    queue: str | None,
    priority: Any,
    max_attempts: int | None,
    unique_key: str | None,
    tags: tuple[str, ...],
    timeout: timedelta | None,
    paused: bool | None,
    as_json: bool,
) -> None:
    """Create schedule NAME firing CRON (or replace the one of that name), enqueuing TYPE jobs.

    \b
    CRON: five fields (minute hour day-of-month month day-of-week), an optional sixth for
    seconds, or @hourly, @daily, @weekly, @monthly, @yearly. A new expression or zone
    re-plans the schedule; the same one keeps its plan.
    """
    job = template(
        type_,
        read_payload(payload) if payload is not None else None,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        unique_key=unique_key,
        tags=list(tags) or None,
        timeout=timeout,
    )
    row = ctx.queue().set_schedule(name, cron, job, tz=tz, missed=missed, max_backfill=max_backfill, paused=paused)
    if as_json:
        echo_json(row)
    else:
        click.echo(f"schedule {name}: {cron} ({tz}), next fire {row.get('next_fire_at') or '- (paused)'}")


@schedules.command("list")
@json_option()
@pass_context
def schedules_list(ctx: Context, as_json: bool) -> None:
    """Every schedule with its next and last fire time and its last job."""
    rows = [_with_status(r) for r in ctx.queue().schedules()]
    if as_json:
        echo_json(rows)
        return
    print_table(f"schedules ({len(rows)})", SCHEDULE_COLUMNS, rows)


@schedules.command("show")
@click.argument("name")
@option(
    "--count", "-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True, help="Fire times to show."
)
@json_option()
@pass_context
def schedules_show(ctx: Context, name: str, count: int, as_json: bool) -> None:
    """One schedule in full, with its next fire times."""
    jq = ctx.queue()
    found = [r for r in jq.schedules() if r["name"] == name]
    if not found:
        from jobqueue.errors import JobNotFound

        raise JobNotFound(f'name: no schedule named "{name}"')
    row = _with_status(found[0])
    upcoming = jq.schedule_next(name, count)
    if as_json:
        echo_json({**row, "upcoming": upcoming})
        return
    print_fields(f"schedule {name}", row)
    print_table("next fire times", [("at", "at (UTC)")], [{"at": t} for t in upcoming])


@schedules.command("pause")
@click.argument("name")
@json_option()
@pass_context
def schedules_pause(ctx: Context, name: str, as_json: bool) -> None:
    """Stop schedule NAME firing (its jobs already enqueued for future ticks are cancelled)."""
    row = ctx.queue().pause_schedule(name)
    if as_json:
        echo_json(row)
    else:
        click.echo(f"schedule {name}: paused")


@schedules.command("resume")
@click.argument("name")
@json_option()
@pass_context
def schedules_resume(ctx: Context, name: str, as_json: bool) -> None:
    """Start paused schedule NAME again from its next tick after now."""
    row = ctx.queue().resume_schedule(name)
    if as_json:
        echo_json(row)
    else:
        click.echo(f"schedule {name}: active, next fire {row.get('next_fire_at') or '-'}")


@schedules.command("remove")
@click.argument("name")
@json_option()
@pass_context
def schedules_remove(ctx: Context, name: str, as_json: bool) -> None:
    """Delete schedule NAME; the jobs it already enqueued stay. Exit 1 when there was none."""
    removed = ctx.queue().remove_schedule(name)
    if as_json:
        echo_json({"name": name, "removed": removed})
    else:
        click.echo(f"schedule {name}: {'removed' if removed else 'did not exist'}")
    if not removed:
        raise SystemExit(1)


@schedules.command("next")
@click.argument("name", required=False)
@option("--cron", "expr", default=None, help="Preview this expression instead of a schedule.")
@option("--tz", default="UTC", show_default=True, help="With --cron: the time zone.")
@option("--after", type=TIMESTAMP, default=None, help="With --cron: start after this time.  [default: now]")
@option("--count", "-n", "count", type=click.IntRange(1, 10_000), default=5, show_default=True, help="How many.")
@json_option()
@pass_context
def schedules_next(
    ctx: Context, name: str | None, expr: str | None, tz: str, after: datetime | None, count: int, as_json: bool
) -> None:
    """The next fire times of schedule NAME, or of any expression (--cron)."""
    if (name is None) == (expr is None):
        raise click.UsageError("give a schedule NAME or --cron EXPR (one of them)")
    jq = ctx.queue()
    times = jq.schedule_next(name, count) if name is not None else jq.cron_next(str(expr), after, tz, count)
    if as_json:
        echo_json(times)
        return
    for t in times:
        click.echo(t.isoformat())
