"""The PagerDuty channel: Events API v2, one alert per incident through its dedupe key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobqueue.alerts.channels import (
    ChannelConfigError,
    Notification,
    config_string,
    http_url,
    json_body,
    post_json,
    read_secret,
)

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
#: Incident severity -> PagerDuty's four (critical, error, warning, info); others map to error.
PAGERDUTY_SEVERITY = {
    "critical": "critical",
    "page": "critical",
    "error": "error",
    "high": "error",
    "warning": "warning",
    "warn": "warning",
    "medium": "warning",
    "info": "info",
    "low": "info",
}
PAGERDUTY_DEFAULT_SEVERITY = "error"
#: PagerDuty's payload.summary limit.
PAGERDUTY_SUMMARY_MAX = 1024


def send_pagerduty(n: Notification) -> dict[str, Any]:
    """PagerDuty Events API v2: trigger (and ``repeat``, a trigger again, which PagerDuty
    folds into the open alert), acknowledge, resolve; ``dedup_key`` is the incident's
    dedupe key, so every event lands on the same PagerDuty alert."""
    key = read_secret(n, "routing_key")
    url = http_url(n, "url", config_string(n, "url", required=False) or PAGERDUTY_URL)
    dedup_key = n.incident.get("dedupe_key")
    if not isinstance(dedup_key, str) or not dedup_key:
        raise ChannelConfigError("incident.dedupe_key", "is required (a non-empty string) for PagerDuty")
    action = {"trigger": "trigger", "repeat": "trigger", "acknowledge": "acknowledge", "resolve": "resolve"}[n.event]
    body: dict[str, Any] = {"routing_key": key, "event_action": action, "dedup_key": dedup_key}
    if action == "trigger":
        severity = str(n.incident.get("severity") or "").lower()
        body["payload"] = {
            "summary": n.title[:PAGERDUTY_SUMMARY_MAX],
            "source": str(n.incident.get("queue") or "jobqueue"),
            "severity": PAGERDUTY_SEVERITY.get(severity, PAGERDUTY_DEFAULT_SEVERITY),
            "timestamp": _iso(n.incident.get("first_seen")),
            "component": n.incident.get("queue") or None,
            "group": n.incident.get("rule") or None,
            "class": n.incident.get("kind") or None,
            "custom_details": dict(n.details()),
        }
        body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
        body["client"] = "jobqueue"
    status = post_json(n, url, json_body(body))
    return {"status": status, "event_action": action, "dedup_key": dedup_key}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)
