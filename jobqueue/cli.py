"""The `jobqueue` command: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import click

from jobqueue import migrations
from jobqueue.config import DatabaseTarget, resolve_database
from jobqueue.errors import InvalidInput, JobNotFound, JobQueueError
from jobqueue.models import TERMINAL_STATES, Job, JobState, Priority
from jobqueue.reports import REPORT_INTERVAL_S
from jobqueue.tables import Column, FittedTable, columns_of
from jobqueue.worker import CONCURRENCY, POLL_INTERVAL_S, RECONCILE_INTERVAL_S, SHUTDOWN_TIMEOUT_S

if TYPE_CHECKING:
    from rich.console import Console

    from jobqueue.client import JobQueue

F = TypeVar("F", bound=Callable[..., Any])

DATABASE_URL_HELP = (
    "PostgreSQL URL. Default: $JOBQUEUE_DATABASE_URL, then $DATABASE_URL, "
    "then an embedded PostgreSQL in $JOBQUEUE_HOME (./.jobqueue)."
)


PREPARED_HELP = (
    "Server-side prepared statements (default: on, unless the URL says prepared_statements=off "
    "or $JOBQUEUE_PREPARED_STATEMENTS=off). Turn them off behind PgBouncer in transaction mode "
    "before 1.21, or without max_prepared_statements."
)


class Context:
    def __init__(
        self, database_url: str | None, prepared_statements: bool | None = None, source: str = "--database-url"
    ) -> None:
        self.database_url = database_url
        self.prepared_statements = prepared_statements
        #: Where database_url came from: the option, or $JOBQUEUE_DATABASE_URL (for messages).
        self.source = source
        self._queue: JobQueue | None = None

    def target(self, *, start_embedded: bool = True) -> DatabaseTarget:
        target = resolve_database(
            self.database_url, start_embedded=start_embedded, prepared_statements=self.prepared_statements
        )
        if self.database_url and target.source == "--database-url":
            return DatabaseTarget(target.url, self.source, target.prepared_statements)
        return target

    def queue(self) -> JobQueue:
        """The library handle the verbs call, closed when the command ends.

        One direct connection first checks the server answers and the schema is current, so
        that a cron run fails fast with one line and its exit code (69 unreachable, 75 not
        migrated) instead of waiting on the pool.
        """
        if self._queue is None:
            from jobqueue.client import JobQueue
            from jobqueue.db import check_schema, connect

            target = self.target()
            with connect(target) as conn:
                check_schema(conn, target)
            jq = JobQueue(target.url, pool_size=2, prepared_statements=target.prepared_statements)
            click.get_current_context().call_on_close(jq.close)
            self._queue = jq
        return self._queue


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "JOBQUEUE"})
@click.option("--database-url", metavar="URL", help=DATABASE_URL_HELP, envvar=[])
@click.option(
    "--prepared-statements/--no-prepared-statements",
    default=None,
    help=PREPARED_HELP,
    allow_from_autoenv=False,  # the library reads $JOBQUEUE_PREPARED_STATEMENTS, after the URL's parameter
)
@click.version_option(package_name="jobqueue")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, prepared_statements: bool | None) -> None:
    """jobqueue: a job queue whose whole state lives in PostgreSQL."""
    # click's auto_envvar_prefix fills --database-url from $JOBQUEUE_DATABASE_URL: say so.
    from_env = ctx.get_parameter_source("database_url") is click.core.ParameterSource.ENVIRONMENT
    ctx.obj = Context(database_url, prepared_statements, "JOBQUEUE_DATABASE_URL" if from_env else "--database-url")


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
    found = migrations.upgrade(target)
    head = migrations.state(target).head
    if found == head:
        click.echo(f"already at {head}")
    else:
        click.echo(f"migrated {target.display} from {found or 'nothing'} to {head}")


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
    listen_url: str | None,
    visibility_timeout: float | None,
    reconcile_interval: float,
    report_interval: float,
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
    )
    try:
        code = jq.run_worker(config)
    finally:
        jq.close()
    sys.exit(code)


# -- input types (parsing only: every check here is also made by the SQL API) ----------------

if TYPE_CHECKING:
    ParamTypeBase: TypeAlias = click.ParamType[Any]
else:  # older click: ParamType is not generic at run time
    ParamTypeBase = click.ParamType

_DURATION = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: Written as a duration or setting value, clears a queue setting (back to the default).
CLEAR_WORDS = frozenset({"none", "null", "default"})


class Cleared:
    """The value of a queue setting option given as ``none``: remove the setting."""

    def __repr__(self) -> str:
        return "none"


CLEAR = Cleared()


class Duration(ParamTypeBase):
    """``30``, ``30s``, ``250ms``, ``5m``, ``2h``, ``1d`` (a bare number is seconds)."""

    name = "duration"

    def __init__(self, *, allow_zero: bool = True, clearable: bool = False) -> None:
        self.allow_zero = allow_zero
        self.clearable = clearable

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION|none" if self.clearable else "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta | Cleared:
        if isinstance(value, timedelta | Cleared):
            return value
        text = str(value).strip().lower()
        if self.clearable and text in CLEAR_WORDS:
            return CLEAR
        match = _DURATION.fullmatch(text)
        if match is None:
            self.fail(f"{value!r} is not a duration (examples: 30, 30s, 250ms, 5m, 2h, 1d)", param, ctx)
        number = float(match[1])
        if number < 0:
            self.fail(f"{value!r} is negative; a duration must be 0 or more", param, ctx)
        if number == 0 and not self.allow_zero:
            self.fail(f"{value!r} must be more than 0", param, ctx)
        try:
            return timedelta(seconds=number * _UNIT_S[match[2]])
        except OverflowError:
            self.fail(f"{value!r} is too long", param, ctx)


class PriorityType(ParamTypeBase):
    """0..10 or low, normal, high, critical (higher runs first)."""

    name = "priority"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "0-10|low|normal|high|critical"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip().lower()
            if text.upper() in Priority.__members__:
                return int(Priority[text.upper()])
            try:
                number = int(text)
            except ValueError:
                self.fail(f"{value!r} is not 0..10 or one of low, normal, high, critical", param, ctx)
        if not 0 <= number <= 10:
            self.fail(f"{value!r} is not 0..10 or one of low, normal, high, critical", param, ctx)
        return number


class Timestamp(ParamTypeBase):
    """ISO-8601 with a time zone: ``2030-01-01T09:00:00Z``, ``2030-01-01 09:00+02:00``."""

    name = "timestamp"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        else:
            try:
                parsed = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an ISO-8601 timestamp (e.g. 2030-01-01T09:00:00Z)", param, ctx)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            self.fail(f"{value!r} has no time zone; add Z or an offset like +02:00", param, ctx)
        return parsed


class Clearable(ParamTypeBase):
    """An integer setting, or ``none`` to remove it."""

    def __init__(self, low: int, high: int | None = None) -> None:
        self.inner = click.IntRange(low, high)
        self.name = "integer|none"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | Cleared:
        if isinstance(value, Cleared) or str(value).strip().lower() in CLEAR_WORDS:
            return CLEAR
        result: int = self.inner.convert(value, param, ctx)
        return result


class JobId(ParamTypeBase):
    """A job id: a whole number from 1 (``jobs show abc`` says so, not "not a valid integer range")."""

    name = "job id"
    MAX = 2**63 - 1

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"job id must be a number, not {value!r}", param, ctx)
        if number < 1:
            self.fail(f"job id must be a positive number, not {value!r}", param, ctx)
        if number > self.MAX:
            self.fail(f"job id is too large: {value!r}", param, ctx)
        return number


DURATION = Duration()
POSITIVE_DURATION = Duration(allow_zero=False)
PRIORITY = PriorityType()
TIMESTAMP = Timestamp()
JOB_ID = JobId()
STATES = [state.value for state in JobState]


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """click.option whose environment variable (JOBQUEUE_<COMMAND>_<OPTION>) shows in --help."""
    attrs.setdefault("show_envvar", True)
    decorator: Callable[[F], F] = click.option(*decls, **attrs)
    return decorator


def json_option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """``--json``: one machine-readable JSON document on stdout instead of tables."""
    return option(*(decls or ("--json", "as_json")), is_flag=True, help="Print one JSON document.", **attrs)


def limit_option(default: int = 50) -> Callable[[F], F]:
    return option(
        "--limit",
        type=click.IntRange(1, 10_000),
        default=default,
        show_default=True,
        help="Rows per page.",
    )


def before_option() -> Callable[[F], F]:
    return option(
        "--before-id",
        type=JOB_ID,
        metavar="ID",
        help="Page: rows with smaller ids (the next page starts after the last id shown).",
    )


# -- data documents (payload, JSON options): bad data is exit 65, nothing written -------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def json_object(text: str, field: str, source: str = "") -> dict[str, Any]:
    """A JSON object from text; anything else (NaN, Infinity, arrays, bad JSON) is InvalidInput."""
    where = f" ({source})" if source else ""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{field}: not valid JSON{where}: {exc.msg} at line {exc.lineno} column {exc.colno}", field=field
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{field}: not valid JSON{where}: {exc}", field=field) from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be a JSON object, not {_json_kind(value)}{where}", field=field)
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def read_payload(spec: str | None) -> dict[str, Any]:
    """PAYLOAD as given: JSON object text, ``-`` for stdin, ``@path`` for a file; none is ``{}``."""
    if spec is None:
        return {}
    if spec == "-":
        text = sys.stdin.read()
        if not text.strip():
            raise InvalidInput("payload: stdin is empty (expected a JSON object)", field="payload")
        return json_object(text, "payload", "stdin")
    if spec.startswith("@"):
        path = spec[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise InvalidInput(f"payload: file {path!r} does not exist", field="payload") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidInput(f"payload: cannot read file {path!r}: {reason}", field="payload") from None
        if not text.strip():
            raise InvalidInput(f"payload: file {path!r} is empty (expected a JSON object)", field="payload")
        return json_object(text, "payload", path)
    return json_object(spec, "payload")


def _optional_object(text: str | None, field: str) -> dict[str, Any] | None:
    return None if text is None else json_object(text, field)


# -- output ------------------------------------------------------------------------------------


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


#: Width of tables written to a pipe or file (no terminal to measure); $COLUMNS overrides it.
PIPE_WIDTH = 200


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
    columns: Sequence[tuple[str, str] | Column],
    rows: Sequence[Mapping[str, Any]],
    out: Console | None = None,
) -> None:
    """Rows as a table that fits the terminal (jobqueue.tables); ``columns`` are (key,
    heading) pairs or Columns (which may be shortened or dropped). Missing keys show '-'."""
    (out or console()).print(fitted_table(title, columns, rows))


def fitted_table(
    title: str,
    columns: Sequence[tuple[str, str] | Column],
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


def next_page_hint(rows: Sequence[Mapping[str, Any]], limit: int) -> int | None:
    """The --before-id of the next page, when this page is full."""
    return int(rows[-1]["id"]) if rows and len(rows) == limit else None


def _attempts(row: Mapping[str, Any]) -> str:
    return f"{row.get('attempt', 0)}/{row.get('max_attempts', '?')}"


def _last_error(row: Mapping[str, Any]) -> str | None:
    if row.get("last_error"):
        return str(row["last_error"])
    errors = row.get("errors") or []
    if not errors:
        return None
    last = errors[-1]
    if isinstance(last, dict):
        return str(last.get("error") or last.get("message") or last)
    return str(last)


# -- enqueue -----------------------------------------------------------------------------------


@cli.command()
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
    policy = _optional_object(retry_policy, "retry_policy")
    meta = _optional_object(metadata, "metadata")
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
        if as_json:
            echo_json({"id": job_id})
        else:
            click.echo(job_id)
        return
    job = wait_for(jq, job_id, wait_timeout)
    if as_json:
        echo_json(job.as_dict())
    elif job.state == JobState.COMPLETED:
        output = job.row.get("output")
        if output is not None:
            click.echo(json.dumps(output, default=_json_default, ensure_ascii=False))
    if job.state != JobState.COMPLETED:
        detail = job.row.get("reason") or _last_error(job.row) or ""
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
        error = _last_error(row) or "no error recorded"
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
    row["attempts"] = _attempts(row)
    return row


@cli.group()
def jobs() -> None:
    """Look at jobs in any state; cancel or retry one."""


@jobs.command("list")
@option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only jobs in this state (repeatable).")
@option("--queue", "-q", default=None, help="Only jobs on this queue.")
@option("--type", "type_", default=None, help="Only jobs of this type.")
@option("--tenant", default=None, help="Only jobs of this tenant.")
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
    rows = [_job_row(job) for job in found]
    more = next_page_hint(rows, limit)
    if as_json:
        echo_json({"jobs": [job.as_dict() for job in found], "next_before_id": more})
        return
    print_table(f"jobs ({len(rows)})", JOB_COLUMNS, rows)
    if more is not None:
        click.echo(f"more: --before-id {more}", err=True)


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


def _error_row(entry: Any) -> dict[str, Any]:
    """One failed attempt from the job's error history, its time parsed for display."""
    row = dict(entry) if isinstance(entry, dict) else {"message": entry}
    if isinstance(row.get("at"), str):
        with contextlib.suppress(ValueError):
            row["at"] = datetime.fromisoformat(row["at"])
    return row


def show_job(job: Job) -> None:
    fields = {k: v for k, v in job.row.items() if k not in ("errors", "last_error")}
    fields["attempts"] = _attempts(job.row)
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
    if as_json:
        echo_json({"id": job_id, "status": status})
    else:
        click.echo(f"job {job_id}: {status.replace('_', ' ')}")
    if status == "already_finished":
        sys.exit(1)


@jobs.command("retry")
@click.argument("job_id", type=JOB_ID, metavar="ID")
@json_option()
@pass_context
def jobs_retry(ctx: Context, job_id: int, as_json: bool) -> None:
    """Put a dead-lettered job back to pending (same id, a fresh attempt budget)."""
    new_id = ctx.queue().retry(job_id)
    if as_json:
        echo_json({"id": new_id})
    else:
        click.echo(f"job {new_id}: pending")


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


# -- dead letters ------------------------------------------------------------------------------

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


def _dlq_filter(
    queue: str | None, type_: str | None, reason: str | None, error_class: str | None = None
) -> dict[str, Any]:
    found = {"queue": queue, "type": type_, "reason": reason, "error_class": error_class}
    return {k: v for k, v in found.items() if v is not None}


def dlq_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["attempts"] = _attempts(row)
    out["last_error"] = _last_error(row)
    return out


@cli.group()
def dlq() -> None:
    """The dead-letter queue: jobs that failed for good, with their input and every error."""


@dlq.command("list")
@option("--queue", "-q", default=None, help="Only this queue.")
@option("--type", "type_", default=None, help="Only this job type.")
@option("--reason", default=None, help="Only this reason (max_retries_exceeded, permanent_error, expired, ...).")
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
    more = next_page_hint(rows, limit)
    if as_json:
        echo_json({"dead_letters": rows, "next_before_id": more})
        return
    print_table(f"dead letters ({len(rows)})", DLQ_COLUMNS, [dlq_row(r) for r in rows])
    if more is not None:
        click.echo(f"more: --before-id {more}", err=True)


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
@option("--queue", "-q", default=None, help="Dead letters of this queue.")
@option("--type", "type_", default=None, help="Dead letters of this job type.")
@option("--reason", default=None, help="Dead letters with this reason.")
@option("--error-class", default=None, help="Dead letters whose last error has this class.")
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
        count = f"{'at least ' if more else ''}{len(ids)} dead letter{'s' if len(ids) != 1 else ''}"
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
    if as_json:
        echo_json({"archived": count})
    else:
        click.echo(f"archived {count} dead letter{'s' if count != 1 else ''}")


@dlq.command("purge")
@option("--queue", "-q", default=None, help="Dead letters of this queue.")
@option("--type", "type_", default=None, help="Dead letters of this job type.")
@option("--reason", default=None, help="Dead letters with this reason.")
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
    if as_json:
        echo_json({"purged": total})
    else:
        click.echo(f"purged {total} dead letter{'s' if total != 1 else ''}")


# -- queues ------------------------------------------------------------------------------------

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


@cli.group()
def queues() -> None:
    """Queues: list, pause, resume, and their settings."""


@queues.command("list")
@json_option()
@pass_context
def queues_list(ctx: Context, as_json: bool) -> None:
    """Every queue with its settings (unset settings use the defaults)."""
    rows = ctx.queue().queues()
    if as_json:
        echo_json(rows)
        return
    print_table(f"queues ({len(rows)})", QUEUE_COLUMNS, rows)


@queues.command("pause")
@click.argument("name")
@json_option()
@pass_context
def queues_pause(ctx: Context, name: str, as_json: bool) -> None:
    """Stop workers claiming from NAME (enqueue still works; running jobs finish)."""
    ctx.queue().pause(name)
    if as_json:
        echo_json({"queue": name, "paused": True})
    else:
        click.echo(f"queue {name}: paused")


@queues.command("resume")
@click.argument("name")
@json_option()
@pass_context
def queues_resume(ctx: Context, name: str, as_json: bool) -> None:
    """Let workers claim from NAME again."""
    ctx.queue().resume(name)
    if as_json:
        echo_json({"queue": name, "paused": False})
    else:
        click.echo(f"queue {name}: resumed")


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


# -- tenants ---------------------------------------------------------------------------------

TENANT_ROLE_COLUMNS = (("role_name", "login role"), ("tenant_id", "tenant"), ("created_at", "since"))
RATE_LIMIT_COLUMNS = (
    ("tenant_id", "tenant"),
    ("rate", "jobs/s"),
    ("burst", "burst"),
    ("tokens_available", "tokens now"),
    ("updated_at", "updated"),
)


@cli.group()
def tenants() -> None:
    """Multi-tenant mode: login roles confined to a tenant, and enqueue rate limits per tenant."""


@tenants.command("list")
@json_option()
@pass_context
def tenants_list(ctx: Context, as_json: bool) -> None:
    """Login roles mapped to a tenant, and the tenants' rate limits."""
    jq = ctx.queue()
    roles, limits = jq.tenant_roles(), jq.tenant_rate_limits()
    if as_json:
        echo_json({"roles": roles, "rate_limits": limits})
        return
    print_table(f"tenant roles ({len(roles)})", TENANT_ROLE_COLUMNS, roles)
    print_table(f"rate limits ({len(limits)})", RATE_LIMIT_COLUMNS, limits)


@tenants.command("map")
@click.argument("role")
@click.argument("tenant")
@json_option()
@pass_context
def tenants_map(ctx: Context, role: str, tenant: str, as_json: bool) -> None:
    """Confine login ROLE to TENANT: its jobs get that tenant_id and it sees no other tenant's.

    \b
    Needs a jobqueue_admin role mapped to no tenant, and a schema owner that is neither a
    superuser nor BYPASSRLS (exit 78 otherwise). Example:
      jobqueue tenants map acme_worker acme
    """
    ctx.queue().set_tenant_role(role, tenant)
    if as_json:
        echo_json({"role_name": role, "tenant_id": tenant})
    else:
        click.echo(f"role {role}: tenant {tenant}")


@tenants.command("unmap")
@click.argument("role")
@json_option()
@pass_context
def tenants_unmap(ctx: Context, role: str, as_json: bool) -> None:
    """Remove ROLE's tenant mapping (it is then unrestricted); exit 1 when it had none."""
    removed = ctx.queue().unset_tenant_role(role)
    if as_json:
        echo_json({"role_name": role, "removed": removed})
    else:
        click.echo(f"role {role}: {'unmapped' if removed else 'was not mapped'}")
    if not removed:
        raise SystemExit(1)


@tenants.command("limit")
@click.argument("tenant")
@option("--rate", type=click.FloatRange(0, 1_000_000, min_open=True), required=True, help="Jobs per second.")
@option("--burst", type=click.IntRange(1, 100_000_000), default=None, help="Largest burst.  [default: the rate]")
@json_option()
@pass_context
def tenants_limit(ctx: Context, tenant: str, rate: float, burst: int | None, as_json: bool) -> None:
    """Limit TENANT's enqueues to --rate jobs/s with bursts of --burst (over it: exit 75).

    \b
    Example:
      jobqueue tenants limit acme --rate 50 --burst 500
    """
    jq = ctx.queue()
    jq.set_tenant_rate_limit(tenant, rate, burst)
    row = next((r for r in jq.tenant_rate_limits() if r["tenant_id"] == tenant), None)
    if as_json:
        echo_json(row)
    elif row is not None:
        click.echo(f"tenant {tenant}: {row['rate']:g} jobs/s, burst {row['burst']}")


@tenants.command("unlimit")
@click.argument("tenant")
@json_option()
@pass_context
def tenants_unlimit(ctx: Context, tenant: str, as_json: bool) -> None:
    """Remove TENANT's enqueue rate limit; exit 1 when it had none."""
    removed = ctx.queue().clear_tenant_rate_limit(tenant)
    if as_json:
        echo_json({"tenant_id": tenant, "removed": removed})
    else:
        click.echo(f"tenant {tenant}: {'no longer limited' if removed else 'had no limit'}")
    if not removed:
        raise SystemExit(1)


# -- workers, stats, reconcile -----------------------------------------------------------------

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


@cli.group()
def workers() -> None:
    """Worker processes, as they register and heartbeat."""


@workers.command("list")
@json_option()
@pass_context
def workers_list(ctx: Context, as_json: bool) -> None:
    """Workers that are running or stopped recently."""
    rows = ctx.queue().workers()
    if as_json:
        echo_json(rows)
        return
    print_table(f"workers ({len(rows)})", WORKER_COLUMNS, rows)


#: Narrower than the terminal, the headings shorten, then error rate, jobs/min and oldest go.
STATS_COLUMNS = (
    Column("queue", "queue"),
    Column("pending", "pending", numeric=True),
    Column("scheduled", "scheduled", short="sched", numeric=True),
    Column("retrying", "retrying", short="retry", numeric=True),
    Column("processing", "processing", short="running", numeric=True),
    Column("dead_letters", "dead", numeric=True),
    Column("oldest_pending_age_s", "oldest (s)", short="oldest", drop=3, numeric=True),
    Column("completed", "done", numeric=True),
    Column("failed", "failed", numeric=True),
    Column("jobs_per_minute", "jobs/min", drop=2, numeric=True),
    Column("error_rate", "error rate", short="err rate", drop=1, numeric=True),
)


def stats_rows(jq: JobQueue, window: timedelta) -> list[dict[str, Any]]:
    """queue_stats joined with metrics(window) by queue."""
    rows = [dict(r) for r in jq.stats()]
    by_queue = {r["queue"]: r for r in jq.metrics(window)}
    for row in rows:
        for key, value in by_queue.get(row["queue"], {}).items():
            row.setdefault(key, value)
    return rows


def stats_table(rows: Sequence[Mapping[str, Any]], window: timedelta) -> FittedTable:
    """The stats as a table that fits the terminal; a paused queue shows as ``name (paused)``."""
    win = duration(window)
    shown = [{**row, "queue": f"{row['queue']} (paused)" if row.get("paused") else row["queue"]} for row in rows]
    caption = (
        f"done, failed, jobs/min, error rate: over the last {win} (failed: failed attempts, retried or "
        "dead-lettered); oldest: seconds the oldest runnable job has waited"
    )
    title = f"queues (rates over the last {win}, at {datetime.now(UTC):%H:%M:%S} UTC)"
    return fitted_table(title, STATS_COLUMNS, shown, caption)


@cli.command()
@option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@option(
    "--interval", type=Duration(allow_zero=False), default="2s", show_default=True, help="With --watch: refresh period."
)
@option("--window", type=Duration(allow_zero=False), default="1h", show_default=True, help="Period of the rates.")
@json_option()
@pass_context
def stats(ctx: Context, watch: bool, interval: timedelta, window: timedelta, as_json: bool) -> None:
    """Per queue: depth, scheduled, retrying, processing, dead letters, age of the oldest, rates."""
    if watch and as_json:
        raise click.UsageError("--watch and --json cannot be used together")
    jq = ctx.queue()
    if as_json:
        echo_json(stats_rows(jq, window))
        return
    if not watch:
        console().print(stats_table(stats_rows(jq, window), window))
        return
    from rich.live import Live

    out = console()
    try:
        if not out.is_terminal:  # a pipe or a file: one table per refresh, appended
            while True:
                out.print(stats_table(stats_rows(jq, window), window))
                out.file.flush()
                time.sleep(interval.total_seconds())
        with Live(stats_table(stats_rows(jq, window), window), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval.total_seconds())
                live.update(stats_table(stats_rows(jq, window), window), refresh=True)
    except KeyboardInterrupt:
        pass


@cli.command()
@option("--dry-run", is_flag=True, help="Report what would be done; change nothing.")
@option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Rows per step.")
@json_option()
@pass_context
def reconcile(ctx: Context, dry_run: bool, batch: int, as_json: bool) -> None:
    """Expire leases, dead-letter exhausted and expired jobs, archive and prune by retention.

    Safe to run from many hosts at once; meant for cron. Exit codes: 0 done; 69 database
    unreachable; 75 schema out of date; 77 not allowed; 78 bad configuration.
    """
    summary = ctx.queue().reconcile(batch=batch, dry_run=dry_run)
    if as_json:
        echo_json(summary)
        return
    counts = {k: v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool) and v}
    parts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(counts.items()))
    if dry_run:
        click.echo(f"reconcile (dry run): {'would do: ' + parts if parts else 'nothing to do'}")
    else:
        click.echo(f"reconcile: {parts or 'nothing to do'}")


@cli.command()
@option(
    "--max-xmin-age",
    type=Duration(allow_zero=False),
    default="5m",
    show_default=True,
    help="Alert when a transaction, snapshot or prepared transaction holding back vacuum is older.",
)
@option(
    "--max-xmin-xids",
    type=click.IntRange(1, 2_000_000_000),
    default=100_000_000,
    show_default=True,
    help="Alert when the oldest xmin is more transaction ids behind.",
)
@option(
    "--max-reconcile-age",
    type=Duration(allow_zero=False),
    default="1m",
    show_default=True,
    help="Alert when reconcile last ran longer ago (or never ran).",
)
@option(
    "--max-lease-overdue",
    type=Duration(allow_zero=True),
    default="1m",
    show_default=True,
    help="Alert when an expired lease has waited longer for reconcile.",
)
@option(
    "--max-notify-queue-usage",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="Alert when more of the NOTIFY queue is in use.",
)
@option(
    "--max-pending-age",
    type=Duration(allow_zero=False),
    default=None,
    help="Alert when a runnable job has waited longer (off unless given).",
)
@option(
    "--max-dead-letters",
    type=click.IntRange(0),
    default=None,
    help="Alert when the dead-letter queue holds more jobs (off unless given).",
)
@option(
    "--max-expired-leases",
    type=click.IntRange(0),
    default=None,
    help="Alert when more leases have expired without reconcile reclaiming them (off unless given).",
)
@json_option()
@pass_context
def health(
    ctx: Context,
    max_xmin_age: timedelta,
    max_xmin_xids: int,
    max_reconcile_age: timedelta,
    max_lease_overdue: timedelta,
    max_notify_queue_usage: float,
    max_pending_age: timedelta | None,
    max_dead_letters: int | None,
    max_expired_leases: int | None,
    as_json: bool,
) -> None:
    """What an operator alerts on: oldest xmin age, reconcile, overdue leases, NOTIFY queue.

    One line per check: its value, threshold and what it refers to. For monitoring: exit 0
    when no check alerts, 1 when one does; 69 database unreachable; 75 schema out of date;
    77 not allowed (needs jobqueue_admin).
    """
    rows = ctx.queue().health(
        max_xmin_age=max_xmin_age,
        max_xmin_xids=max_xmin_xids,
        max_reconcile_age=max_reconcile_age,
        max_lease_overdue=max_lease_overdue,
        max_notify_queue_usage=max_notify_queue_usage,
        max_pending_age=max_pending_age,
        max_dead_letters=max_dead_letters,
        max_expired_leases=max_expired_leases,
    )
    alerting = [r["check_name"] for r in rows if r["alert"]]
    if as_json:
        echo_json(rows)
    else:
        from rich.table import Table

        table = Table(show_edge=False, pad_edge=False)
        for heading in ("check", "value", "threshold", "status", "detail"):
            table.add_column(heading, justify="right" if heading in ("value", "threshold") else "left")
        for r in rows:
            status = "[bold red]ALERT[/]" if r["alert"] else "ok"
            table.add_row(r["check_name"], cell(r["value"]), cell(r["threshold"]), status, r["detail"])
        console().print(table)
        click.echo(
            f"health: {len(alerting)} alert{'s' if len(alerting) != 1 else ''}"
            + (f" ({', '.join(alerting)})" if alerting else "")
        )
    if alerting:
        sys.exit(1)


@cli.command()
@option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@option("--port", type=click.IntRange(1, 65535), default=9544, show_default=True, help="Port to listen on.")
@option("--once", is_flag=True, help="Print one scrape on stdout and exit (no server); refresh the mirror once.")
@option("--redis-url", metavar="URL", default=None, help="Also mirror the figures to this Redis (optional cache).")
@option(
    "--mirror-interval",
    type=Duration(allow_zero=False),
    default="5s",
    show_default=True,
    help="With --redis-url: seconds between mirror refreshes.",
)
@pass_context
def exporter(ctx: Context, host: str, port: int, once: bool, redis_url: str | None, mirror_interval: timedelta) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics, read from the database at each scrape.

    Per queue: jobs by state, dead letters, age of the oldest runnable job, paused; every
    `jobqueue health` check as value, threshold and alert; jobqueue_up. With --redis-url it
    also mirrors them to Redis. Runs until SIGTERM or Ctrl-C. Exit codes: 0 stopped; 1
    --once could not write the mirror; 69 database unreachable at start; 75 schema out of
    date; 78 port unavailable, a bad --redis-url, or prometheus-client / redis not installed.
    """
    from jobqueue import exporter as exporter_module

    mirror = None
    if redis_url is not None:
        from jobqueue.mirror import RedisMirror

        mirror = RedisMirror(redis_url, interval_s=mirror_interval.total_seconds(), owner=f"exporter:{os.getpid()}")
    jq = ctx.queue()
    jq.pool_timeout = exporter_module.SCRAPE_DB_TIMEOUT_S
    if once:
        click.echo(exporter_module.render(jq), nl=False)
        if mirror is not None and not mirror.refresh(jq, force=True):
            raise click.ClickException("redis_url: could not write the mirror (Redis unreachable)")
        return
    server = exporter_module.serve(jq, host, port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if mirror is not None:
        threading.Thread(target=mirror.run, args=(jq, stop), name="jobqueue-mirror", daemon=True).start()
    click.echo(f"jobqueue exporter: serving http://{host}:{server.server_port}/metrics", err=True)
    while not stop.wait(1.0):  # a timed wait: the signal handler runs between waits
        pass
    server.shutdown()


# -- demo ------------------------------------------------------------------------------------


@cli.command()
@option(
    "--jobs", "job_count", type=click.IntRange(20, 100_000), default=3000, show_default=True, help="Jobs to enqueue."
)
@option("--workers", "worker_count", type=click.IntRange(1, 16), default=2, show_default=True, help="Worker processes.")
@option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True, help="Jobs at once per worker.")
@pass_context
def demo(ctx: Context, job_count: int, worker_count: int, concurrency: int) -> None:
    """Show the product in under a minute: enqueue, work, retry, dead-letter, redrive.

    Uses the database as every command does (the embedded PostgreSQL by default) and its
    own queue `demo`, cleared first.
    """
    from jobqueue import demo as demo_module
    from jobqueue.db import REQUIRED_SCHEMA_VERSION

    target = ctx.target()
    click.echo(f"database: {target.display}")
    migrations.upgrade(target)
    info = _probe(target)
    version = str(info.get("server_version") or "?").split()[0]  # "15.20", not "15.20 (Debian ...)"
    schema = info.get("schema_version")
    click.echo(
        f"server: PostgreSQL {version}, jobqueue schema {schema} (this jobqueue needs {REQUIRED_SCHEMA_VERSION})"
    )
    code = demo_module.run(target, jobs=job_count, workers=worker_count, concurrency=concurrency)
    sys.exit(code)


# -- bench -----------------------------------------------------------------------------------


@cli.command()
@option("--quick", is_flag=True, help="Tiny N for a smoke test (well under a minute).")
@option(
    "--only",
    metavar="A,B",
    default=None,
    help=(
        "Scenarios: baseline,enqueue,drain,latency,history,cost; overload and schedules only when named.  "
        "[default: all]"
    ),
)
@option(
    "--max-seconds",
    type=click.FloatRange(1, 86_400),
    default=120.0,
    show_default=True,
    help="Time budget of each scenario; past it, a measurement stops and reports its partial rate.",
)
@option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the results to FILE.")
@option(
    "--jobs",
    type=click.IntRange(10, 10_000_000),
    default=None,
    help="N of the bulk and drain scenarios.  [default: 50000]",
)
@option(
    "--single-jobs",
    type=click.IntRange(10, 10_000_000),
    default=None,
    help="N of the 1-tx-per-job paths.  [default: 10000]",
)
@option(
    "--drain-concurrency",
    metavar="C,C",
    default=None,
    help="Worker -c values to drain with; the first is the reference.",
)
@option(
    "--scratch-db",
    metavar="NAME",
    default=None,
    help="Scratch database, dropped and recreated.  [default: <database>_bench]",
)
@option("--keep", is_flag=True, help="Keep the scratch databases after the run.")
@option(
    "--peers",
    "peers_python",
    metavar="PYTHON",
    default=None,
    help="Also run Procrastinate and PgQueuer (make bench-peers).",
)
@option("--no-progress", is_flag=True, help="No progress bar.")
@option(
    "--duration", type=click.FloatRange(10, 86_400), default=None, help="overload: seconds of overload.  [default: 600]"
)
@option(
    "--backlog-jobs",
    type=click.IntRange(0, 10_000_000),
    default=None,
    help="overload: the backlog drained at the end (0: skip).  [default: 1000000]",
)
@option("--overload-rate", type=click.FloatRange(1, 1_000_000), default=None, help="overload: jobs/s offered.")
@option(
    "--overload-factor",
    type=click.FloatRange(1, 10, min_open=True),
    default=None,
    help="overload: x capacity.  [default: 1.3]",
)
@option(
    "--overload-concurrency", type=click.IntRange(1, 10_000), default=None, help="overload: worker -c.  [default: 32]"
)
@pass_context
def bench(
    ctx: Context,
    quick: bool,
    only: str | None,
    max_seconds: float,
    json_path: str | None,
    jobs: int | None,
    single_jobs: int | None,
    drain_concurrency: str | None,
    scratch_db: str | None,
    keep: bool,
    peers_python: str | None,
    no_progress: bool,
    duration: float | None,
    backlog_jobs: int | None,
    overload_rate: float | None,
    overload_factor: float | None,
    overload_concurrency: int | None,
) -> None:
    """Measure jobqueue against a raw-SQL baseline on the same server, in one run.

    Works in a scratch database (<database>_bench) that it drops and recreates, never on
    real jobs. See docs/performance.md.
    """
    from pathlib import Path

    from jobqueue import bench as bench_module

    config = bench_module.BenchConfig(
        quick=quick,
        only=bench_module.parse_only(only),
        max_seconds=max_seconds,
        jobs=jobs,
        single_jobs=single_jobs,
        drain_concurrency=bench_module.parse_ints(drain_concurrency, bench_module.BenchConfig().drain_concurrency),
        scratch_db=scratch_db,
        keep=keep,
        json_path=Path(json_path) if json_path else None,
        peers_python=peers_python,
        progress=not no_progress,
        extra={
            "duration_s": duration,
            "backlog_jobs": backlog_jobs,
            "rate": overload_rate,
            "factor": overload_factor,
            "concurrency": overload_concurrency,
        },
    ).validate()
    sys.exit(bench_module.run(ctx.target(), config))


# -- environment variables -------------------------------------------------------------------


def name_envvars(group: click.Group, prefix: str = "JOBQUEUE") -> None:
    """Name the environment variable of every option that shows one and has none yet.

    ``JOBQUEUE_<COMMAND PATH>_<LONG FLAG>``: ``jobqueue jobs list --before-id`` reads
    ``JOBQUEUE_JOBS_LIST_BEFORE_ID``. Derived from the flag rather than the Python parameter
    name (click's auto_envvar_prefix would give ``..._AS_JSON`` for ``--json``).
    """
    for name, command in group.commands.items():
        path = f"{prefix}_{name.upper().replace('-', '_')}"
        for param in command.params:
            if isinstance(param, click.Option) and param.show_envvar and not param.envvar:
                flag = max((o for o in param.opts if o.startswith("--")), key=len)
                param.envvar = f"{path}_{flag[2:].upper().replace('-', '_')}"
        if isinstance(command, click.Group):
            name_envvars(command, path)


name_envvars(cli)


# -- entry point -----------------------------------------------------------------------------


import jobqueue.cli_schedules  # noqa: E402,F401  (registers `jobqueue schedules`)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error is one line on stderr and an exit code.

    2 for a usage error (click), the error class's code for a JobQueueError (65 bad data,
    69 database unavailable, 75 schema out of date or queue full, 78 bad configuration, ...).
    """
    try:
        cli.main(args=argv, prog_name="jobqueue", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        message = " ".join(exc.format_message().split())
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            message += f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"jobqueue: error: {message}", err=True)
        sys.exit(exc.exit_code)
    except JobQueueError as exc:
        click.echo(f"jobqueue: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
