"""How every verb prints: a rich table for people, one JSON document with ``--json``.

A listing verb ends in :func:`print_rows` or :func:`print_page`, a verb that changes one
thing in :func:`report`; both print the same data either way. Tables go to stdout at the
terminal's width, or :data:`PIPE_WIDTH` columns into a pipe or file; hints ("more:
--before-id N") and progress go to stderr, so stdout stays one document.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from jobqueue.models import Job
from jobqueue.tables import Column, FittedTable, columns_of

if TYPE_CHECKING:
    from rich.console import Console

#: Width of tables written to a pipe or file (no terminal to measure); $COLUMNS overrides it.
PIPE_WIDTH = 200

Columns = Sequence[tuple[str, str] | Column]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Job):
        return value.as_dict()
    return str(value)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))


def json_line(value: Any) -> str:
    """``value`` as compact one-line JSON (a job's output, a dict in a table cell)."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def console() -> Console:
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = PIPE_WIDTH
    return out


def duration(value: timedelta) -> str:
    """``1d``, ``2h``, ``5m``, ``90s``, ``0.25s``: the largest unit that divides it."""
    total = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{total / size:g}{unit}"
    return f"{total:g}s"


def cell(value: Any) -> str:
    """A value as a table cell: timestamps to the second in UTC, durations in seconds."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        return duration(value)
    if isinstance(value, Decimal | float):
        return f"{float(value):.4g}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, default=_json_default, separators=(",", ":"))
    return str(value)


def print_table(
    title: str,
    columns: Columns,
    rows: Sequence[Mapping[str, Any]],
    out: Console | None = None,
) -> None:
    """Rows as a table that fits the terminal (jobqueue.tables); ``columns`` are (key,
    heading) pairs or Columns (which may be shortened or dropped). Missing keys show '-'."""
    (out or console()).print(fitted_table(title, columns, rows))


def fitted_table(
    title: str,
    columns: Columns,
    rows: Sequence[Mapping[str, Any]],
    caption: str | None = None,
) -> FittedTable:
    spec = columns_of(columns, _NUMERIC)
    return FittedTable(title, spec, [{c.key: cell(row.get(c.key)) for c in spec} for row in rows], caption=caption)


def print_fields(title: str, fields: Mapping[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, show_edge=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in fields.items():
        table.add_row(key, cell(value))
    console().print(table)


_NUMERIC = frozenset(
    {
        "id",
        "priority",
        "attempt",
        "pending",
        "scheduled",
        "retrying",
        "processing",
        "dead_letters",
        "oldest_pending_age_s",
        "completed",
        "failed",
        "jobs_done",
        "concurrency",
        "pid",
        "max_size",
        "max_output_bytes",
    }
)

# -- the --json twins ----------------------------------------------------------------------------


def report(as_json: bool, document: Any, text: str) -> None:
    """What a verb did: ``document`` as JSON with --json, else the line ``text``."""
    if as_json:
        echo_json(document)
    else:
        click.echo(text)


def print_rows(as_json: bool, title: str, columns: Columns, rows: Sequence[Mapping[str, Any]]) -> None:
    """A whole listing: the rows as a JSON array with --json, else a table titled "TITLE (count)"."""
    if as_json:
        echo_json(rows)
        return
    print_table(f"{title} ({len(rows)})", columns, rows)


def print_page(
    as_json: bool,
    key: str,
    documents: Sequence[Any],
    title: str,
    columns: Columns,
    rows: Sequence[Mapping[str, Any]],
    limit: int,
) -> None:
    """One page of a listing paged by id, newest first.

    With --json: ``{KEY: documents, "next_before_id": N}``; else ``rows`` as a table and,
    when the page is full, the --before-id of the next page on stderr.
    """
    more = next_page_hint(rows, limit)
    if as_json:
        echo_json({key: documents, "next_before_id": more})
        return
    print_table(f"{title} ({len(rows)})", columns, rows)
    if more is not None:
        click.echo(f"more: --before-id {more}", err=True)


def next_page_hint(rows: Sequence[Mapping[str, Any]], limit: int) -> int | None:
    """The --before-id of the next page, when this page is full."""
    return int(rows[-1]["id"]) if rows and len(rows) == limit else None


# -- job rows ----------------------------------------------------------------------------------


def attempts(row: Mapping[str, Any]) -> str:
    return f"{row.get('attempt', 0)}/{row.get('max_attempts', '?')}"


def last_error(row: Mapping[str, Any]) -> str | None:
    if row.get("last_error"):
        return str(row["last_error"])
    errors = row.get("errors") or []
    if not errors:
        return None
    last = errors[-1]
    if isinstance(last, dict):
        return str(last.get("error") or last.get("message") or last)
    return str(last)


def _error_row(entry: Any) -> dict[str, Any]:
    """One failed attempt from the job's error history, its time parsed for display."""
    row = dict(entry) if isinstance(entry, dict) else {"message": entry}
    if isinstance(row.get("at"), str):
        with contextlib.suppress(ValueError):
            row["at"] = datetime.fromisoformat(row["at"])
    return row


def show_job(job: Job) -> None:
    """One job as fields, then its failed attempts and the last traceback (jobs show, dlq show)."""
    fields = {k: v for k, v in job.row.items() if k not in ("errors", "last_error")}
    fields["attempts"] = attempts(job.row)
    print_fields(f"job {job.id}", fields)
    errors = job.row.get("errors") or []
    if errors:
        rows = [_error_row(e) for e in errors]
        columns = [("attempt", "attempt"), ("at", "at (UTC)"), ("error_class", "class"), ("message", "error")]
        print_table(f"failed attempts ({len(rows)})", columns, rows)
        last_tb = next((e.get("traceback") for e in reversed(rows) if e.get("traceback")), None)
        if last_tb:
            click.echo("last traceback:")
            click.echo(str(last_tb).rstrip())
