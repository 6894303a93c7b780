"""``jobqueue queues``: list, pause, resume, and the settings that live in the database.

A setting given as ``none`` (or ``null``, ``default``) is cleared back to the default; the
library call is :meth:`~jobqueue.client.JobQueue.configure_queue`, the SQL one
``jobqueue.configure_queue``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import echo_json, print_fields, print_rows, report
from jobqueue.cli._params import CLEAR, CLEAR_WORDS, Clearable, Cleared, Duration, json_object, json_option, option

QUEUE_COLUMNS = (
    ("name", "queue"),
    ("paused", "paused"),
    ("max_size", "max size"),
    ("visibility_timeout", "visibility"),
    ("max_attempts", "max attempts"),
    ("retry_policy", "retry policy"),
    ("dead_letter_max_age_days", "dlq days"),
    ("history_retention", "history"),
    ("aging_interval", "aging"),
    ("max_output_bytes", "max output"),
)


@click.group()
def queues() -> None:
    """Queues: list, pause, resume, and their settings."""


@queues.command("list")
@json_option()
@pass_context
def queues_list(ctx: Context, as_json: bool) -> None:
    """Every queue with its settings (unset settings use the defaults)."""
    print_rows(as_json, "queues", QUEUE_COLUMNS, ctx.queue().queues())


@queues.command("pause")
@click.argument("name")
@json_option()
@pass_context
def queues_pause(ctx: Context, name: str, as_json: bool) -> None:
    """Stop workers claiming from NAME (enqueue still works; running jobs finish)."""
    ctx.queue().pause(name)
    report(as_json, {"queue": name, "paused": True}, f"queue {name}: paused")


@queues.command("resume")
@click.argument("name")
@json_option()
@pass_context
def queues_resume(ctx: Context, name: str, as_json: bool) -> None:
    """Let workers claim from NAME again."""
    ctx.queue().resume(name)
    report(as_json, {"queue": name, "paused": False}, f"queue {name}: resumed")


@queues.command("set")
@click.argument("name")
@option("--max-size", type=Clearable(1), default=None, help="Backlog cap: enqueue beyond it is refused (exit 75).")
@option("--visibility-timeout", type=Duration(allow_zero=False, clearable=True), default=None, help="Default lease.")
@option("--max-attempts", type=Clearable(1, 1000), default=None, help="Default attempts per job.")
@option("--retry-policy", metavar="JSON|none", default=None, help="Default retry policy of the queue's jobs.")
@option("--dead-letter-max-age-days", type=Clearable(1), default=None, help="Archive dead letters older than this.")
@option(
    "--history-retention",
    type=Duration(allow_zero=False, clearable=True),
    default=None,
    help="Keep finished jobs this long.",
)
@option(
    "--aging-interval",
    type=Duration(allow_zero=False, clearable=True),
    default=None,
    help="Raise a waiting job's priority by one this often.",
)
@option(
    "--max-output-bytes",
    type=Clearable(1, 16777216),
    default=None,
    help="Largest job output stored (JSON text); a larger one dead-letters the job.  [default: 1048576]",
)
@json_option()
@pass_context
def queues_set(
    ctx: Context,
    name: str,
    max_size: int | Cleared | None,
    visibility_timeout: timedelta | Cleared | None,
    max_attempts: int | Cleared | None,
    retry_policy: str | None,
    dead_letter_max_age_days: int | Cleared | None,
    history_retention: timedelta | Cleared | None,
    aging_interval: timedelta | Cleared | None,
    max_output_bytes: int | Cleared | None,
    as_json: bool,
) -> None:
    """Change queue NAME's settings; `none` clears one back to the default.

    \b
    Example:
      jobqueue queues set email --max-size 100000 --visibility-timeout 2m --max-attempts none
    """
    given: dict[str, Any] = {
        "max_size": max_size,
        "visibility_timeout": visibility_timeout,
        "max_attempts": max_attempts,
        "dead_letter_max_age_days": dead_letter_max_age_days,
        "history_retention": history_retention,
        "aging_interval": aging_interval,
        "max_output_bytes": max_output_bytes,
    }
    if retry_policy is not None:
        cleared = retry_policy.strip().lower() in CLEAR_WORDS
        given["retry_policy"] = CLEAR if cleared else json_object(retry_policy, "retry_policy")
    settings = {k: (None if isinstance(v, Cleared) else v) for k, v in given.items() if v is not None}
    if not settings:
        raise click.UsageError("nothing to set: give at least one setting option (see --help)")
    result = ctx.queue().configure_queue(name, **settings)
    if as_json:
        echo_json({"queue": name, "settings": result})
        return
    print_fields(f"queue {name}", result)
