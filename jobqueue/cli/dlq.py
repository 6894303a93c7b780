"""``jobqueue dlq``: the dead-letter queue: list, show, redrive, archive, purge.

Bulk verbs (redrive, purge) work in chunks of :data:`DLQ_CHUNK` jobs per library call, so a
filter that matches a million dead letters never holds one long transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import attempts, echo_json, last_error, print_page, report, show_job
from jobqueue.cli._params import JOB_ID, before_option, filter_options, json_option, limit_option, option
from jobqueue.errors import JobNotFound
from jobqueue.models import JobState
from jobqueue.tables import Column

#: Narrower than the terminal, state goes first, then the time, then the queue; the last
#: error is cut short (`dlq show ID` has it whole).
DLQ_COLUMNS = (
    Column("id", "id", numeric=True),
    Column("state", "state", drop=1),
    Column("queue", "queue", drop=3),
    Column("type", "type"),
    Column("reason", "reason"),
    Column("attempts", "attempts", short="tries"),
    Column("dead_at", "dead since (UTC)", short="dead since", drop=2),
    Column("last_error", "last error", free_text=True),
)
#: Jobs per redrive/purge call; big filters run in chunks of this size.
DLQ_CHUNK = 1000
#: The most ids one redrive call returns (the SQL API's limit), so the most a dry run lists.
DRY_RUN_MAX = 10_000

#: The filters of the bulk verbs (redrive, purge), as their --help words them.
BULK_FILTERS = {
    "queue": "Dead letters of this queue.",
    "type": "Dead letters of this job type.",
    "reason": "Dead letters with this reason.",
}


def _dlq_filter(
    queue: str | None, type_: str | None, reason: str | None, error_class: str | None = None
) -> dict[str, Any]:
    found = {"queue": queue, "type": type_, "reason": reason, "error_class": error_class}
    return {k: v for k, v in found.items() if v is not None}


def dlq_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["attempts"] = attempts(row)
    out["last_error"] = last_error(row)
    return out


def _plural(count: int) -> str:
    return f"{count} dead letter{'s' if count != 1 else ''}"


@click.group()
def dlq() -> None:
    """The dead-letter queue: jobs that failed for good, with their input and every error."""


@dlq.command("list")
@filter_options(
    queue="Only this queue.",
    type="Only this job type.",
    reason="Only this reason (max_retries_exceeded, permanent_error, expired, ...).",
)
@limit_option()
@before_option()
@json_option()
@pass_context
def dlq_list(
    ctx: Context,
    queue: str | None,
    type_: str | None,
    reason: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
) -> None:
    """List dead letters (and archived ones, state archived), newest first."""
    rows = ctx.queue().dead_letters(queue=queue, type=type_, reason=reason, before_id=before_id, limit=limit)
    print_page(as_json, "dead_letters", rows, "dead letters", DLQ_COLUMNS, [dlq_row(r) for r in rows], limit)


@dlq.command("show")
@click.argument("job_id", type=JOB_ID, metavar="ID")
@json_option()
@pass_context
def dlq_show(ctx: Context, job_id: int, as_json: bool) -> None:
    """One dead letter: its input, the reason and every attempt's error."""
    job = ctx.queue().get(job_id)
    if job.state not in (JobState.DEAD_LETTER, JobState.ARCHIVED):
        raise JobNotFound(f"job {job_id} is not a dead letter (it is {job.state.value}); see `jobqueue jobs show`")
    if as_json:
        echo_json(job.as_dict())
        return
    show_job(job)


@dlq.command("redrive")
@click.argument("job_ids", type=JOB_ID, nargs=-1, metavar="[ID]...")
@filter_options(**BULK_FILTERS, error_class="Dead letters whose last error has this class.")
@option("--limit", type=click.IntRange(1), default=None, help="Redrive at most this many.  [default: all that match]")
@option(
    "--chunk-size", type=click.IntRange(1, 10_000), default=DLQ_CHUNK, show_default=True, help="Jobs per statement."
)
@option("--dry-run", is_flag=True, help="Print what would be redriven; change nothing.")
@json_option()
@pass_context
def dlq_redrive(
    ctx: Context,
    job_ids: tuple[int, ...],
    queue: str | None,
    type_: str | None,
    reason: str | None,
    error_class: str | None,
    limit: int | None,
    chunk_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Put dead letters back to pending: the IDs given, or every one matching the filters.

    Each keeps its id, input and error history and gets a fresh attempt budget. With no ID
    and no filter, every dead letter is redriven.
    """
    filt = _dlq_filter(queue, type_, reason, error_class)
    if job_ids and filt:
        raise click.UsageError("give job IDs or filters (--queue, --type, --reason, --error-class), not both")
    jq = ctx.queue()
    if job_ids:
        filt = {"ids": list(job_ids)}
        limit = min(limit or len(job_ids), len(job_ids))
    more = False
    if dry_run:
        ask = min(limit or DRY_RUN_MAX, DRY_RUN_MAX)
        ids = jq.redrive(filt, limit=ask, dry_run=True)
        more = len(ids) == ask and (limit is None or limit > ask)
    else:
        ids = _in_chunks(lambda n: jq.redrive(filt, limit=n), limit, chunk_size, "redriving", as_json)
    missed = sorted(set(job_ids) - set(ids))
    if as_json:
        echo_json({"dry_run": dry_run, "count": len(ids), "ids": ids, "more": more, "not_dead_letters": missed})
    else:
        verb = "would redrive" if dry_run else "redrove"
        shown = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
        count = f"{'at least ' if more else ''}{_plural(len(ids))}"
        click.echo(f"{verb} {count}{': ' + shown if ids else ''}")
    if missed:
        click.echo(f"jobqueue: not dead letters (left as they are): {', '.join(map(str, missed))}", err=True)
        sys.exit(1)


def _in_chunks(step: Callable[[int], list[int]], limit: int | None, chunk: int, what: str, quiet: bool) -> list[int]:
    """Call ``step(n)`` until it returns fewer than asked (or ``limit`` is reached).

    A progress bar shows once more than one chunk is needed (never with --json).
    """
    done: list[int] = []
    progress = None
    task = None
    try:
        while limit is None or len(done) < limit:
            ask = chunk if limit is None else min(chunk, limit - len(done))
            got = step(ask)
            done.extend(got)
            if progress is None and len(got) == ask and not quiet and (limit is None or len(done) < limit):
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                progress = Progress(
                    TextColumn(what),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=Console(stderr=True),
                )
                progress.start()
                task = progress.add_task(what, total=limit)
            if progress is not None and task is not None:
                progress.update(task, completed=len(done))
            if len(got) < ask:
                break
    finally:
        if progress is not None:
            progress.stop()
    return done


@dlq.command("archive")
@option(
    "--max-age-days",
    type=click.IntRange(0, 36_500),
    default=None,
    help="Archive dead letters older than this (0: all).  [default: each queue's dead_letter_max_age_days, else 14]",
)
@json_option()
@pass_context
def dlq_archive(ctx: Context, max_age_days: int | None, as_json: bool) -> None:
    """Archive old dead letters: state archived, kept for inspection, never redriven by a filter."""
    count = ctx.queue().archive_dead_letters(max_age_days)
    report(as_json, {"archived": count}, f"archived {_plural(count)}")


@dlq.command("purge")
@filter_options(**BULK_FILTERS)
@option("--yes", is_flag=True, help="Needed to purge every dead letter (no filter).")
@json_option()
@pass_context
def dlq_purge(ctx: Context, queue: str | None, type_: str | None, reason: str | None, yes: bool, as_json: bool) -> None:
    """Delete dead letters for good (the audit trail keeps that they existed)."""
    filt = _dlq_filter(queue, type_, reason)
    if not filt and not yes:
        raise click.UsageError("purging every dead letter needs --yes (or narrow it with --queue/--type/--reason)")
    jq = ctx.queue()
    total = 0
    while True:
        count = jq.purge_dead_letters(filt, limit=DLQ_CHUNK)
        total += count
        if count < DLQ_CHUNK:
            break
    report(as_json, {"purged": total}, f"purged {_plural(total)}")
