"""``jobqueue stats``, ``health`` and ``exporter``: what an operator watches and alerts on.

All three read the same library calls (``stats``, ``metrics``, ``health``) that
``SELECT * FROM jobqueue.queue_stats()`` / ``jobqueue.health()`` give any other language;
the exporter serves them to Prometheus (:mod:`jobqueue.exporter`) and may mirror them to
Redis (:mod:`jobqueue.mirror`). Both ``stats`` and ``health`` end with the open alert
incidents (``jobqueue.alerts``); the alerts' own verbs are in ``cli/alerts.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import cell, console, duration, echo_json, fitted_table
from jobqueue.cli._params import Duration, json_option, option
from jobqueue.tables import Column, FittedTable

if TYPE_CHECKING:
    from jobqueue.client import JobQueue

# -- stats -------------------------------------------------------------------------------------

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


def open_alerts_line(jq: JobQueue) -> str | None:
    """``open alerts: 2 (critical 1, warning 1): worker_down, queue_depth emails``, or
    ``open alerts: none``; None when the caller may not read alerts (a tenant role)."""
    from jobqueue.errors import PermissionDenied

    try:
        rows = jq.alerts("open", limit=1000)
    except PermissionDenied:
        return None
    if not rows:
        return "open alerts: none"
    by_severity: dict[str, int] = {}
    for r in rows:
        by_severity[r["severity"]] = by_severity.get(r["severity"], 0) + 1
    counts = ", ".join(f"{sev} {by_severity[sev]}" for sev in ("critical", "warning", "info") if sev in by_severity)
    names = ", ".join(f"#{r['id']} {r['rule']}{' ' + r['queue'] if r['queue'] else ''}" for r in rows[:10])
    more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
    return f"open alerts: {len(rows)} ({counts}): {names}{more}; `jobqueue alerts list`"


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


@click.command()
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
        line = open_alerts_line(jq)
        if line:
            click.echo(line)
        return
    from rich.live import Live

    out = console()
    # Ctrl-C (SIGINT) or SIGTERM ends the loop after the refresh in progress: raised in the
    # middle of a query, KeyboardInterrupt could land inside the driver or the pool's
    # clean-up instead of here.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not out.is_terminal:  # a pipe or a file: one table per refresh, appended
            while not stop.is_set():
                out.print(stats_table(stats_rows(jq, window), window))
                out.file.flush()
                stop.wait(interval.total_seconds())
            return
        with Live(stats_table(stats_rows(jq, window), window), console=out, auto_refresh=False) as live:
            while not stop.wait(interval.total_seconds()):
                live.update(stats_table(stats_rows(jq, window), window), refresh=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- health ------------------------------------------------------------------------------------


@click.command()
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
        line = open_alerts_line(ctx.queue())
        if line:
            click.echo(line)
    if alerting:
        sys.exit(1)


# -- exporter ----------------------------------------------------------------------------------


@click.command()
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
