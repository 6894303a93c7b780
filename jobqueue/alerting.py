"""Alert rules, incidents and channels: the library side of the SQL alert API.

Detection runs in the database (``jobqueue.reconcile`` ends with it; see docs/sql-api.md
"Alerts"): it opens one incident per condition and enqueues each notification as an
ordinary job (queue :data:`NOTIFY_QUEUE`, type :data:`NOTIFY_TYPE`) that a worker delivers.
This module is the Python face of that API (mixed into :class:`jobqueue.client.JobQueue`)
and the one place ``JOBQUEUE_ALERT_*`` environment variables are read: detection has no
environment (pg_cron has none), so ``jobqueue reconcile`` applies them to the built-in rules
(:meth:`AlertMethods.apply_alert_env`). Delivery (SMTP, Slack, PagerDuty, webhooks) is not
here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jobqueue.errors import ConfigurationError, InvalidInput
from jobqueue.sql import Rows, StatementRunner

#: Where detection enqueues notifications: the contract with the delivery handler.
NOTIFY_QUEUE = "jobqueue.alerts"
NOTIFY_TYPE = "jobqueue.notify"

RULE_KINDS = (
    "queue_depth",
    "oldest_runnable_age",
    "error_rate",
    "dead_letters",
    "job_stuck",
    "worker_down",
    "reconcile_not_run",
    "xmin_horizon",
    "notify_queue",
)
SEVERITIES = ("critical", "warning", "info")
CHANNEL_KINDS = ("email", "slack", "pagerduty", "webhook")
ALERT_STATES = ("open", "firing", "acknowledged", "resolved", "all")

#: The built-in rules (sql/schema.sql seeds them), each settable by JOBQUEUE_ALERT_<NAME>.
BUILTIN_RULES = (
    "queue_depth",
    "oldest_runnable_age",
    "error_rate_1h",
    "error_rate_24h",
    "dead_letters",
    "job_stuck",
    "worker_down",
    "reconcile_not_run",
    "xmin_horizon",
    "notify_queue",
)
ENV_PREFIX = "JOBQUEUE_ALERT_"
#: Variable suffix -> rule setting. No suffix (and _AFTER, read naturally for the rules
#: measured in seconds: JOBQUEUE_ALERT_WORKER_DOWN_AFTER=90) set the threshold.
ENV_SUFFIXES = {
    "": "threshold",
    "_AFTER": "threshold",
    "_CLEAR": "clear_threshold",
    "_SEVERITY": "severity",
    "_ENABLED": "enabled",
    "_RESOLVE_AFTER": "resolve_after_s",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_rule_settings(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The rule settings the ``JOBQUEUE_ALERT_*`` variables give, by built-in rule name.

    ``JOBQUEUE_ALERT_QUEUE_DEPTH=5000`` sets queue_depth's threshold;
    ``..._CLEAR``, ``..._SEVERITY``, ``..._ENABLED`` (true/false), ``..._RESOLVE_AFTER``
    (seconds) the other settings; ``JOBQUEUE_ALERT_WORKER_DOWN_AFTER=90`` reads as the
    threshold. Numbers are sent as numbers, anything else as text (a duration such as
    ``5 minutes`` for the rules measured in seconds), for the database to check. An unknown
    variable raises ConfigurationError naming it.
    """
    found: dict[str, dict[str, Any]] = {}
    names = sorted(BUILTIN_RULES, key=len, reverse=True)  # error_rate_24h before error_rate_1h
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :]
        match = None
        for name in names:
            upper = name.upper()
            if rest.startswith(upper) and rest[len(upper) :] in ENV_SUFFIXES:
                match = (name, ENV_SUFFIXES[rest[len(upper) :]])
                break
        if match is None:
            known = ", ".join(ENV_PREFIX + n.upper() for n in BUILTIN_RULES)
            raise ConfigurationError(
                f"{var}: not a known alert variable (rules: {known}; suffixes: _CLEAR, _SEVERITY, _ENABLED, "
                "_RESOLVE_AFTER)"
            )
        name, setting = match
        raw = environ[var].strip()
        value: Any
        if setting == "enabled":
            if raw.lower() not in _TRUE | _FALSE:
                raise ConfigurationError(f"{var}: must be true or false (got {raw!r})")
            value = raw.lower() in _TRUE
        elif setting == "severity":
            value = raw.lower()
        else:
            value = number_or_text(raw)
        settings = found.setdefault(name, {})
        if setting in settings and settings[setting] != value:
            raise ConfigurationError(
                f"{var}: {name}'s {setting} is also set by another variable to {settings[setting]}"
            )
        settings[setting] = value
    return found


def number_or_text(raw: str) -> Any:
    if re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", raw):
        number = float(raw)
        return int(number) if number.is_integer() else number
    return raw


class AlertMethods(StatementRunner):
    """Mixed into JobQueue: alert incidents, rules and channels (docs/sql-api.md "Alerts")."""

    # -- incidents ---------------------------------------------------------------------------

    def alerts(self, state: str = "open", *, limit: int = 100) -> Rows:
        """Alert incidents (the ``jobqueue.alerts`` view): open (firing or acknowledged),
        firing, acknowledged, resolved or all; most severe and newest first."""
        return self._fetch("list_alerts", {"state": state, "limit": limit})

    def get_alert(self, id: int) -> dict[str, Any]:
        """One incident with its notifications (channel, event, job id and state);
        JobNotFound when there is none."""
        return dict(self._fetch("get_alert", {"id": id})[0]["alert"])

    def ack_alert(self, id: int, by: str | None = None) -> dict[str, Any]:
        """Acknowledge a firing incident (no more repeats; an "acknowledge" notification to its
        channels). Already acknowledged: unchanged. Resolved: InvalidInput (field id)."""
        return dict(self._fetch("ack_alert", {"id": id, "by": by})[0]["alert"])

    def resolve_alert(self, id: int, by: str | None = None) -> dict[str, Any]:
        """Resolve an open incident by hand (a "resolve" notification); InvalidInput when it
        is resolved already."""
        return dict(self._fetch("resolve_alert", {"id": id, "by": by})[0]["alert"])

    def check_alerts(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Run detection now (reconcile runs it too): alerts_opened, alerts_resolved,
        alerts_open, alert_notifications."""
        return dict(self._fetch("check_alerts", {"dry_run": dry_run})[0]["summary"])

    # -- rules -------------------------------------------------------------------------------

    def alert_rules(self) -> Rows:
        """Every rule: the built-in defaults and the per queue / job type overrides."""
        return self._fetch("list_alert_rules", {})

    def set_alert_rule(
        self, name: str, *, queue: str | None = None, type: str | None = None, **settings: Any
    ) -> dict[str, Any]:
        """Create or change rule ``name`` (for one queue and/or job type: an override of the
        default of that name). Settings: kind, severity, threshold, clear_threshold,
        window_s, min_events, resolve_after_s, enabled; the rest keep their values."""
        document = json.dumps(settings)
        return dict(
            self._fetch("set_alert_rule", {"name": name, "settings": document, "queue": queue, "type": type})[0]["rule"]
        )

    def remove_alert_rule(self, name: str, *, queue: str | None = None, type: str | None = None) -> bool:
        """Delete a rule or override; False when there was none (a built-in default is
        disabled with ``set_alert_rule(name, enabled=False)`` instead)."""
        return bool(self._fetch("remove_alert_rule", {"name": name, "queue": queue, "type": type})[0]["removed"])

    def apply_alert_env(self, environ: Mapping[str, str]) -> list[dict[str, Any]]:
        """Apply the ``JOBQUEUE_ALERT_*`` variables (:func:`env_rule_settings`) to the
        built-in rules; only settings that differ are written. Returns the rules changed. A
        value the database refuses raises ConfigurationError naming the variable's rule."""
        wanted = env_rule_settings(environ)
        if not wanted:
            return []
        current = {r["name"]: r for r in self.alert_rules() if r["queue"] is None and r["type"] is None}
        changed = []
        for name, settings in sorted(wanted.items()):
            row = current.get(name, {})
            if all(row.get(k) == v for k, v in settings.items()):
                continue
            try:
                changed.append(self.set_alert_rule(name, **settings))
            except InvalidInput as exc:
                raise ConfigurationError(f"{ENV_PREFIX}{name.upper()}: {exc}") from exc
        return changed

    # -- channels ----------------------------------------------------------------------------

    def alert_channels(self) -> Rows:
        """Every channel (its config names secrets only by variable or file) and its route."""
        return self._fetch("list_alert_channels", {})

    def add_alert_channel(
        self, name: str, kind: str, config: Mapping[str, Any], route: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create (or replace) a channel: kind email, slack, pagerduty or webhook; config
        checked by the database per kind, errors naming ``config.<key>``."""
        params = {"name": name, "kind": kind, "config": json.dumps(config), "route": json.dumps(route or {})}
        return dict(self._fetch("add_alert_channel", params)[0]["channel"])

    def set_alert_route(self, channel: str, **route: Any) -> dict[str, Any]:
        """Change which incidents a channel receives: kinds, rules, queues (lists, None:
        every one), min_severity, repeat_interval_s (None: never), send_resolve, enabled."""
        return dict(self._fetch("set_alert_route", {"channel": channel, "route": json.dumps(route)})[0]["channel"])

    def remove_alert_channel(self, name: str) -> bool:
        return bool(self._fetch("remove_alert_channel", {"name": name})[0]["removed"])

    def test_alert_channel(self, name: str) -> int:
        """Enqueue a test notification to channel ``name``; returns its job id (a worker
        delivers it like any notification)."""
        return int(self._fetch("test_alert_channel", {"name": name})[0]["job_id"])
