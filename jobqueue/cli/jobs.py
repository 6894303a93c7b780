"""``jobqueue enqueue`` and ``jobqueue jobs``: put one job in, then look at it, cancel or retry it.

Each verb is one library call (:meth:`~jobqueue.client.JobQueue.enqueue`, ``list``, ``get``,
``cancel``, ``retry``, ``logs``); what lives here is the parsing of the options and the
printing of the result.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import (
    attempts,
    cell,
    echo_json,
    json_line,
    last_error,
    print_page,
    report,
    show_job,
)
from jobqueue.cli._params import (
    DURATION,
    JOB_ID,
    POSITIVE_DURATION,
    PRIORITY,
    TIMESTAMP,
    before_option,
    filter_options,
    json_option,
    limit_option,
    option,
    optional_object,
    read_payload,
)
from jobqueue.errors import JobQueueError
from jobqueue.models import TERMINAL_STATES, Job, JobState

if TYPE_CHECKING:
    from jobqueue.client import JobQueue

# -- enqueue -----------------------------------------------------------------------------------


@click.command()
@click.argument("type_", metavar="TYPE")
@click.argument("payload", required=False, metavar="[PAYLOAD|-|@FILE]")
@option("--queue", "-q", default=None, help="Queue to put the job on.  [default: default]")
@option("--priority", "-p", type=PRIORITY, default=None, help="Higher runs first.  [default: normal (5)]")
@option("--delay", type=DURATION, default=None, help="Run no earlier than this long from now.")
@option("--run-at", type=TIMESTAMP, default=None, help="Run no earlier than this time (needs a time zone).")
@option("--max-attempts", type=click.IntRange(1, 1000), default=None, help="Attempts before it is dead-lettered.")
@option(
    "--retry-policy",
    metavar="JSON",
    default=None,
    help='Retry policy, e.g. \'{"strategy": "fixed", "initial_delay": 5}\'.',
)
@option(
    "--unique-key",
    metavar="KEY",
    default=None,
    help="At most one live job per key: a duplicate prints the live job's id.",
)
@option("--expires-at", type=TIMESTAMP, default=None, help="Dead-letter it (reason expired) if not started by then.")
@option(
    "--expires-in",
    type=POSITIVE_DURATION,
    default=None,
    help="Same as --expires-at, relative to now (this machine's clock).",
)
@option("--tenant", metavar="ID", default=None, help="Tenant id (row-level security in multi-tenant setups).")
@option("--user", metavar="ID", default=None, help="User id, for auditing.")
@option("--tag", "tags", multiple=True, metavar="TAG", help="A tag (repeatable).")
@option(
    "--metadata", metavar="JSON", default=None, help="A JSON object stored with the job (not given to the handler)."
)
@option("--depends-on", type=JOB_ID, multiple=True, metavar="ID", help="Run only after job ID completes (repeatable).")
@option("--timeout", type=POSITIVE_DURATION, default=None, help="Longest one attempt may run.")
@option("--visibility-timeout", type=POSITIVE_DURATION, default=None, help="Lease length per claim.")
@option(
    "--wait",
    is_flag=True,
    help="Wait for the outcome, saying on stderr what the job waits for: print the output; exit 0 completed, "
    "1 failed or cancelled.",
)
@option("--wait-timeout", type=DURATION, default=None, help="With --wait: give up after this long (exit 124).")
@json_option()
@pass_context
def enqueue(
    ctx: Context,
    type_: str,
    payload: str | None,
    queue: str | None,
    priority: int | None,
    delay: timedelta | None,
    run_at: datetime | None,
    max_attempts: int | None,
    retry_policy: str | None,
    unique_key: str | None,
    expires_at: datetime | None,
    expires_in: timedelta | None,
    tenant: str | None,
    user: str | None,
    tags: tuple[str, ...],
    metadata: str | None,
    depends_on: tuple[int, ...],
    timeout: timedelta | None,
    visibility_timeout: timedelta | None,
    wait: bool,
    wait_timeout: timedelta | None,
    as_json: bool,
) -> None:
    """Enqueue one job of TYPE; print its id.

    PAYLOAD is a JSON object (default {}); `-` reads it from stdin, `@FILE` from a file.
    Bad data (not JSON, NaN, not an object, empty or missing input) exits 65 and writes nothing.

    \b
    Examples:
      jobqueue enqueue email.send '{"to": "a@example.com"}' -q email --priority high
      jobqueue enqueue report.build @params.json --delay 5m --tag nightly
      echo '{"n": 1}' | jobqueue enqueue compute - --wait --wait-timeout 30s
    """
    if delay is not None and run_at is not None:
        raise click.UsageError("--delay and --run-at cannot be used together")
    if expires_at is not None and expires_in is not None:
        raise click.UsageError("--expires-at and --expires-in cannot be used together")
    if wait_timeout is not None and not wait:
        raise click.UsageError("--wait-timeout needs --wait")
    document = read_payload(payload)
    policy = optional_object(retry_policy, "retry_policy")
    meta = optional_object(metadata, "metadata")
    if expires_in is not None:
        expires_at = datetime.now(UTC) + expires_in
    jq = ctx.queue()
    job_id = jq.enqueue(
        type_,
        document,
        queue=queue,
        priority=priority,
        delay=delay,
        run_at=run_at,
        max_attempts=max_attempts,
        retry_policy=policy,
        unique_key=unique_key,
        expires_at=expires_at,
        tenant_id=tenant,
        user_id=user,
        tags=list(tags) or None,
        metadata=meta,
        depends_on=list(depends_on) or None,
        timeout=timeout,
        visibility_timeout=visibility_timeout,
    )
    if not wait:
        report(as_json, {"id": job_id}, str(job_id))
        return
    job = wait_for(jq, job_id, wait_timeout)
    if as_json:
        echo_json(job.as_dict())
    elif job.state == JobState.COMPLETED:
        output = job.row.get("output")
        if output is not None:
            click.echo(json_line(output))
    if job.state != JobState.COMPLETED:
        detail = job.row.get("reason") or last_error(job.row) or ""
        click.echo(f"jobqueue: job {job_id} ended {job.state.value}{': ' + detail if detail else ''}", err=True)
        sys.exit(1)


#: Exit code of `enqueue --wait` when the job has not finished in --wait-timeout (like timeout(1)).
WAIT_TIMEOUT_EXIT = 124
WAIT_POLL_MIN_S = 0.05
WAIT_POLL_MAX_S = 1.0
#: While the job waits, what it waits for (a worker on its queue ...) is looked at again this often.
WAIT_DESCRIBE_S = 5.0


def wait_for(jq: JobQueue, job_id: int, timeout: timedelta | None) -> Job:
    """Poll the job until it is finished (completed, dead letter, cancelled, archived).

    Says on stderr, at once and at every change, what the job is waiting for (a worker on
    its queue, its run time, its dependencies, a retry), so a wait never looks hung.
    """
    deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()
    limit = " (--wait-timeout gives up after a while)" if timeout is None else ""
    click.echo(f"job {job_id}: waiting for it to finish; Ctrl-C stops waiting, the job stays queued{limit}", err=True)
    pause = WAIT_POLL_MIN_S
    said, said_at, seen = "", 0.0, None
    try:
        while True:
            job = jq.get(job_id)
            if job.state in TERMINAL_STATES:
                return job
            run_at = job.row.get("run_at")
            due = not isinstance(run_at, datetime) or run_at <= datetime.now(UTC)
            key = (job.state, job.row.get("attempt"), job.row.get("worker_id"), job.row.get("waiting_on"), due)
            if key != seen or time.monotonic() - said_at > WAIT_DESCRIBE_S:
                seen, said_at = key, time.monotonic()
                text = describe_wait(jq, job)
                if text != said:
                    click.echo(f"job {job_id}: {text}", err=True)
                    said = text
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    click.echo(
                        f"jobqueue: error: job {job_id} is still {job.state.value} after "
                        f"{timeout.total_seconds() if timeout else 0:g}s (--wait-timeout)",
                        err=True,
                    )
                    sys.exit(WAIT_TIMEOUT_EXIT)
                time.sleep(min(pause, left))
            else:
                time.sleep(pause)
            pause = min(pause * 1.5, WAIT_POLL_MAX_S)
    except KeyboardInterrupt:
        click.echo(f"jobqueue: stopped waiting; job {job_id} stays queued (`jobqueue jobs show {job_id}`)", err=True)
        sys.exit(130)


def describe_wait(jq: JobQueue, job: Job) -> str:
    """What an unfinished job is waiting for, in a few words."""
    row = job.row
    attempts = f"attempt {row.get('attempt')}/{row.get('max_attempts')}"
    if job.state == JobState.PROCESSING:
        return f"processing on worker {row.get('worker_id')} ({attempts})"
    run_at = row.get("run_at")
    later = isinstance(run_at, datetime) and run_at > datetime.now(UTC)
    if job.state == JobState.RETRYING:
        error = last_error(row) or "no error recorded"
        when = f" at {cell(run_at)} UTC" if later else ""
        return f"retrying{when}: {attempts} failed: {error}"
    if row.get("waiting_on"):
        deps = ", ".join(str(d) for d in row.get("depends_on") or [])
        return f"pending: waiting for {row['waiting_on']} of the jobs it depends on ({deps}) to complete"
    if later:
        return f"pending: scheduled for {cell(run_at)} UTC"
    return f"pending: waiting for a worker on queue {job.queue!r} that handles {job.type!r}{_worker_hint(jq, job)}"


def _worker_hint(jq: JobQueue, job: Job) -> str:
    """Why no worker may take the job: its queue paused, no live worker on it, none with its type."""
    try:
        if any(q["name"] == job.queue and q.get("paused") for q in jq.queues()):
            return f"; queue {job.queue!r} is paused (`jobqueue queues resume {job.queue}`)"
        live = [w for w in jq.workers() if w.get("status") == "healthy" and job.queue in (w.get("queues") or [])]
    except JobQueueError:  # e.g. a producer role may not read the workers
        return ""
    if not live:
        return f"; no worker is running on queue {job.queue!r}"
    if not any(job.type in ((w.get("metadata") or {}).get("types") or []) for w in live):
        return f"; the {len(live)} worker(s) on queue {job.queue!r} do not handle {job.type!r}"
    return ""


# -- jobs --------------------------------------------------------------------------------------

JOB_COLUMNS = (
    ("id", "id"),
    ("state", "state"),
    ("queue", "queue"),
    ("type", "type"),
    ("priority", "prio"),
    ("attempts", "attempts"),
    ("run_at", "run at (UTC)"),
    ("created_at", "created (UTC)"),
    ("reason", "reason"),
)


def _job_row(job: Job) -> dict[str, Any]:
    row = dict(job.row)
    row["attempts"] = attempts(row)
    return row


@click.group()
def jobs() -> None:
    """Look at jobs in any state; cancel or retry one."""


@jobs.command("list")
@filter_options(
    state="Only jobs in this state (repeatable).",
    queue="Only jobs on this queue.",
    type="Only jobs of this type.",
    tenant="Only jobs of this tenant.",
)
@limit_option()
@before_option()
@json_option()
@pass_context
def jobs_list(
    ctx: Context,
    states: tuple[str, ...],
    queue: str | None,
    type_: str | None,
    tenant: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
) -> None:
    """List jobs, newest first. Page with --before-id (printed when there is more)."""
    found = ctx.queue().list(
        states=list(states) or None, queue=queue, type=type_, tenant_id=tenant, before_id=before_id, limit=limit
    )
    documents = [job.as_dict() for job in found]
    print_page(as_json, "jobs", documents, "jobs", JOB_COLUMNS, [_job_row(job) for job in found], limit)


@jobs.command("show")
@click.argument("job_id", type=JOB_ID, metavar="ID")
@json_option()
@pass_context
def jobs_show(ctx: Context, job_id: int, as_json: bool) -> None:
    """Everything on one job: options, payload, output, and every failed attempt."""
    job = ctx.queue().get(job_id)
    if as_json:
        echo_json(job.as_dict())
        return
    show_job(job)


@jobs.command("cancel")
@click.argument("job_id", type=JOB_ID, metavar="ID")
@option("--reason", default=None, help="Why (kept on the job).")
@json_option()
@pass_context
def jobs_cancel(ctx: Context, job_id: int, reason: str | None, as_json: bool) -> None:
    """Cancel a job: a waiting one at once, a running one is asked to stop (its worker sees it).

    Exit 1 when the job had already finished.
    """
    status = ctx.queue().cancel(job_id, reason)
    report(as_json, {"id": job_id, "status": status}, f"job {job_id}: {status.replace('_', ' ')}")
    if status == "already_finished":
        sys.exit(1)


@jobs.command("retry")
@click.argument("job_id", type=JOB_ID, metavar="ID")
@json_option()
@pass_context
def jobs_retry(ctx: Context, job_id: int, as_json: bool) -> None:
    """Put a dead-lettered job back to pending (same id, a fresh attempt budget)."""
    new_id = ctx.queue().retry(job_id)
    report(as_json, {"id": new_id}, f"job {new_id}: pending")


@jobs.command("logs")
@click.argument("job_id", type=JOB_ID, metavar="ID")
@json_option()
@pass_context
def jobs_logs(ctx: Context, job_id: int, as_json: bool) -> None:
    """The log lines its handlers wrote (ctx.log), oldest first."""
    jq = ctx.queue()
    jq.get(job_id)  # an unknown id is an error, not an empty log
    rows = jq.logs(job_id)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        attempt = f" attempt {row['attempt']}" if row.get("attempt") is not None else ""
        click.echo(f"{cell(row.get('at'))}{attempt}  {row.get('message', '')}")
