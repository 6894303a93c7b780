"""``jobqueue alerts``: incidents (list, show, ack, resolve, check), rules and channels.

The verbs over :mod:`jobqueue.alerting` (the JobQueue alert calls, each one SQL function:
``jobqueue.list_alerts``, ``ack_alert``, ``set_alert_rule``, ``add_alert_channel``, ...).
Detection itself runs in ``reconcile``; delivery is done by workers running the
``jobqueue.notify`` jobs detection enqueues (``channels test`` enqueues one by hand).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from jobqueue.alerting import ALERT_STATES, CHANNEL_KINDS, RULE_KINDS, SEVERITIES, number_or_text
from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import echo_json, print_fields, print_rows, print_table, report
from jobqueue.cli._params import POSITIVE_DURATION, json_object, json_option, option
from jobqueue.errors import InvalidInput

ALERT_COLUMNS = (
    ("id", "id"),
    ("severity", "severity"),
    ("state", "state"),
    ("rule", "rule"),
    ("queue", "queue"),
    ("type", "type"),
    ("value", "value"),
    ("threshold", "threshold"),
    ("count", "count"),
    ("first_seen", "first seen (UTC)"),
    ("last_seen", "last seen (UTC)"),
    ("summary", "summary"),
)
RULE_COLUMNS = (
    ("name", "name"),
    ("kind", "kind"),
    ("queue", "queue"),
    ("type", "type"),
    ("severity", "severity"),
    ("threshold", "fires above"),
    ("clear_threshold", "clears at"),
    ("window_s", "window (s)"),
    ("min_events", "min events"),
    ("resolve_after_s", "resolve after (s)"),
    ("enabled", "enabled"),
)
CHANNEL_COLUMNS = (
    ("name", "name"),
    ("kind", "kind"),
    ("min_severity", "min severity"),
    ("kinds", "rule kinds"),
    ("queues", "queues"),
    ("repeat_interval_s", "repeat (s)"),
    ("send_resolve", "resolve"),
    ("enabled", "enabled"),
    ("config", "config"),
)
NOTICE_COLUMNS = (
    ("at", "at (UTC)"),
    ("channel", "channel"),
    ("event", "event"),
    ("job_id", "job"),
    ("job_state", "job state"),
)


@click.group()
def alerts() -> None:
    """Alerts: incidents reconcile detects, the rules it applies, the channels it notifies.

    \b
    Examples:
      jobqueue alerts list
      jobqueue alerts ack 12 --by alice
      jobqueue alerts rules set queue_depth --queue emails --threshold 500
      jobqueue alerts channels add ops email '{"host": "smtp.example.com", "port": 587,
          "from": "jobqueue@example.com", "to": ["ops@example.com"], "starttls": true}'
      jobqueue alerts channels test ops
    """


@alerts.command("list")
@option("--state", type=click.Choice(ALERT_STATES), default="open", show_default=True, help="Which incidents.")
@option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="At most this many.")
@json_option()
@pass_context
def alerts_list(ctx: Context, state: str, limit: int, as_json: bool) -> None:
    """Alert incidents, most severe and newest first (default: the open ones)."""
    print_rows(as_json, f"alerts: {state}", ALERT_COLUMNS, ctx.queue().alerts(state, limit=limit))


@alerts.command("show")
@click.argument("alert_id", type=int, metavar="ID")
@json_option()
@pass_context
def alerts_show(ctx: Context, alert_id: int, as_json: bool) -> None:
    """One incident in full, with the notifications sent for it."""
    alert = ctx.queue().get_alert(alert_id)
    if as_json:
        echo_json(alert)
        return
    notices = alert.pop("notifications", [])
    print_fields(f"alert {alert_id}", alert)
    print_table(f"notifications ({len(notices)})", NOTICE_COLUMNS, notices)


@alerts.command("ack")
@click.argument("alert_id", type=int, metavar="ID")
@option("--by", default=None, help="Who acknowledges it.  [default: the database login role]")
@json_option()
@pass_context
def alerts_ack(ctx: Context, alert_id: int, by: str | None, as_json: bool) -> None:
    """Acknowledge firing alert ID: no more repeats; its channels get an acknowledge notification."""
    alert = ctx.queue().ack_alert(alert_id, by)
    report(as_json, alert, f"alert {alert_id}: {alert['state']} by {alert['acknowledged_by']}")


@alerts.command("resolve")
@click.argument("alert_id", type=int, metavar="ID")
@option("--by", default=None, help="Who resolves it.  [default: the database login role]")
@json_option()
@pass_context
def alerts_resolve(ctx: Context, alert_id: int, by: str | None, as_json: bool) -> None:
    """Resolve open alert ID by hand (detection opens a new one if the condition still holds)."""
    alert = ctx.queue().resolve_alert(alert_id, by)
    report(as_json, alert, f"alert {alert_id}: resolved")


@alerts.command("check")
@option("--dry-run", is_flag=True, help="Report what fires now; change nothing.")
@json_option()
@pass_context
def alerts_check(ctx: Context, dry_run: bool, as_json: bool) -> None:
    """Run alert detection now (reconcile runs it on every pass)."""
    summary = ctx.queue().check_alerts(dry_run=dry_run)
    parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(summary.items()))
    report(as_json, summary, f"alerts: {parts}")


# -- rules -------------------------------------------------------------------------------------


@alerts.group("rules")
def rules() -> None:
    """Alert rules: the built-in defaults (on out of the box) and per queue / job type overrides.

    The defaults' thresholds also come from JOBQUEUE_ALERT_<RULE> variables, applied by
    `jobqueue reconcile` (docs/cli.md "Alerts").
    """


@rules.command("list")
@json_option()
@pass_context
def rules_list(ctx: Context, as_json: bool) -> None:
    """Every rule, defaults first."""
    print_rows(as_json, "alert rules", RULE_COLUMNS, ctx.queue().alert_rules())


@rules.command("set")
@click.argument("name")
@option("--queue", "-q", default=None, help="Override the rule for this queue only.")
@option("--type", "type_", default=None, help="Override the rule for this job type only.")
@option("--kind", type=click.Choice(RULE_KINDS), default=None, help="Kind of a new rule.")
@option("--severity", type=click.Choice(SEVERITIES), default=None, help="Severity of its incidents.")
@option("--threshold", default=None, help="Fires above this (seconds may be a duration: '10 minutes').")
@option("--clear-threshold", default=None, help="Clears at or under this (hysteresis).")
@option("--window", "window_s", type=click.IntRange(300, 86400), default=None, help="error_rate/dead_letters: seconds.")
@option("--min-events", type=click.IntRange(0), default=None, help="error_rate: no verdict on fewer attempts.")
@option("--resolve-after", type=click.IntRange(0, 604800), default=None, help="Seconds clear before it resolves.")
@option("--enable/--disable", "enabled", default=None, help="Turn the rule (or this override) on or off.")
@json_option()
@pass_context
def rules_set(
    ctx: Context,
    name: str,
    queue: str | None,
    type_: str | None,
    kind: str | None,
    severity: str | None,
    threshold: str | None,
    clear_threshold: str | None,
    window_s: int | None,
    min_events: int | None,
    resolve_after: int | None,
    enabled: bool | None,
    as_json: bool,
) -> None:
    """Create or change rule NAME (with --queue/--type: an override of the default NAME)."""
    settings: dict[str, Any] = {
        "kind": kind,
        "severity": severity,
        "threshold": None if threshold is None else number_or_text(threshold),
        "clear_threshold": None if clear_threshold is None else number_or_text(clear_threshold),
        "window_s": window_s,
        "min_events": min_events,
        "resolve_after_s": resolve_after,
        "enabled": enabled,
    }
    given = {k: v for k, v in settings.items() if v is not None}
    rule = ctx.queue().set_alert_rule(name, queue=queue, type=type_, **given)
    scope = " ".join(p for p in (f"queue {queue}" if queue else "", f"type {type_}" if type_ else "") if p)
    report(
        as_json,
        rule,
        f"alert rule {name}{' (' + scope + ')' if scope else ''}: {rule['kind']} {rule['severity']}, "
        f"fires above {rule['threshold']}, clears at {rule['clear_threshold']}"
        f"{'' if rule['enabled'] else ', disabled'}",
    )


@rules.command("remove")
@click.argument("name")
@option("--queue", "-q", default=None, help="The queue of the override.")
@option("--type", "type_", default=None, help="The job type of the override.")
@json_option()
@pass_context
def rules_remove(ctx: Context, name: str, queue: str | None, type_: str | None, as_json: bool) -> None:
    """Delete rule NAME (or its override); built-in defaults are disabled, not removed. Exit 1: none."""
    removed = ctx.queue().remove_alert_rule(name, queue=queue, type=type_)
    report(
        as_json,
        {"name": name, "queue": queue, "type": type_, "removed": removed},
        f"alert rule {name}: {'removed' if removed else 'did not exist'}",
    )
    if not removed:
        raise SystemExit(1)


# -- channels ----------------------------------------------------------------------------------


def _config(spec: str) -> dict[str, Any]:
    """CONFIG as given: JSON object text or ``@path`` of a file holding one."""
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            return json_object(path.read_text(encoding="utf-8"), "config", str(path))
        except OSError as exc:
            raise InvalidInput(f"config: cannot read file {str(path)!r}: {exc.strerror}", field="config") from None
    return json_object(spec, "config")


@alerts.group("channels")
def channels() -> None:
    """Where notifications go (email, slack, pagerduty, webhook) and which incidents each gets.

    Secrets are never stored: a config names an environment variable (*_env) or a file
    (*_file) that the worker delivering the notification reads.
    """


@channels.command("add")
@click.argument("name")
@click.argument("kind", type=click.Choice(CHANNEL_KINDS))
@click.argument("config", metavar="CONFIG|@FILE")
@option("--rule-kind", "kinds", multiple=True, type=click.Choice(RULE_KINDS), help="Only these kinds (repeatable).")
@option("--rule", "rules_", multiple=True, help="Only these rule names (repeatable).")
@option("--queue", "-q", "queues", multiple=True, help="Only alerts of these queues (repeatable).")
@option("--min-severity", type=click.Choice(SEVERITIES), default=None, help="Lowest severity sent.  [default: warning]")
@option("--repeat", type=POSITIVE_DURATION, default=None, help="Repeat a still-firing alert this often.  [default: 4h]")
@option("--no-repeat", is_flag=True, help="Never repeat.")
@option("--no-resolve", is_flag=True, help="Send no resolve notification.")
@json_option()
@pass_context
def channels_add(
    ctx: Context,
    name: str,
    kind: str,
    config: str,
    kinds: tuple[str, ...],
    rules_: tuple[str, ...],
    queues: tuple[str, ...],
    min_severity: str | None,
    repeat: timedelta | None,
    no_repeat: bool,
    no_resolve: bool,
    as_json: bool,
) -> None:
    """Create channel NAME of KIND (or replace its config) with a JSON CONFIG, and its route.

    \b
    email      {"host", "port", "from", "to": [...], "starttls", "ssl", "username",
                "password_env" | "password_file", "timeout_s"}
    slack      {"url" | "url_env" | "url_file"}
    pagerduty  {"routing_key_env" | "routing_key_file", "url"}
    webhook    {"url", "secret_env" | "secret_file", "headers": {...}}
    """
    if repeat is not None and no_repeat:
        raise click.UsageError("--repeat and --no-repeat cannot be used together")
    route: dict[str, Any] = {}
    if kinds:
        route["kinds"] = list(kinds)
    if rules_:
        route["rules"] = list(rules_)
    if queues:
        route["queues"] = list(queues)
    if min_severity:
        route["min_severity"] = min_severity
    if repeat is not None:
        route["repeat_interval_s"] = repeat.total_seconds()
    if no_repeat:
        route["repeat_interval_s"] = None
    if no_resolve:
        route["send_resolve"] = False
    channel = ctx.queue().add_alert_channel(name, kind, _config(config), route)
    report(as_json, channel, f"alert channel {name}: {kind}, min severity {channel['min_severity']}")


@channels.command("list")
@json_option()
@pass_context
def channels_list(ctx: Context, as_json: bool) -> None:
    """Every channel with its route."""
    print_rows(as_json, "alert channels", CHANNEL_COLUMNS, ctx.queue().alert_channels())


@channels.command("remove")
@click.argument("name")
@json_option()
@pass_context
def channels_remove(ctx: Context, name: str, as_json: bool) -> None:
    """Delete channel NAME (notifications already enqueued still run). Exit 1 when there was none."""
    removed = ctx.queue().remove_alert_channel(name)
    report(
        as_json,
        {"name": name, "removed": removed},
        f"alert channel {name}: {'removed' if removed else 'did not exist'}",
    )
    if not removed:
        raise SystemExit(1)


@channels.command("test")
@click.argument("name")
@json_option()
@pass_context
def channels_test(ctx: Context, name: str, as_json: bool) -> None:
    """Enqueue a test notification to channel NAME; a worker running queue jobqueue.alerts sends it."""
    job_id = ctx.queue().test_alert_channel(name)
    report(
        as_json,
        {"channel": name, "job_id": job_id},
        f"alert channel {name}: test notification enqueued as job {job_id} (queue jobqueue.alerts; "
        f"`jobqueue jobs show {job_id}` to follow it)",
    )
