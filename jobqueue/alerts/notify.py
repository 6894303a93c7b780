"""The built-in task ``jobqueue.notify``: one notification, sent by an ordinary worker.

The database (reconcile's alert step, ``jobqueue alerts ack|resolve``) enqueues one job per
notification and channel on the queue ``jobqueue.alerts``, with the payload::

    {"event": "trigger" | "repeat" | "acknowledge" | "resolve",
     "channel": {"name": ..., "kind": "email" | "slack" | "pagerduty" | "webhook", "config": {...}},
     "incident": {"id", "dedupe_key", "rule", "kind", "severity", "state", "queue", "type",
                  "value", "threshold", "first_seen", "last_seen", "count",
                  "acknowledged_by", "acknowledged_at", "resolved_at", "summary"}}

Every :class:`~jobqueue.client.JobQueue` registers this task (:func:`register`), and every
worker claims from ``jobqueue.alerts`` besides its own queues unless told not to
(``WorkerConfig(alerts=False)``, ``jobqueue worker --no-alerts``). So a notification is
retried with backoff when its receiver is down or answers 429/5xx (a ``Retry-After`` it
sends is that attempt's delay), dead-lettered with a reason when the receiver refuses it or
the channel's config is wrong (the error names the field), and listed like any job.
Delivery is at least once: a worker that dies after sending but before acknowledging sends
again; receivers dedupe on the PagerDuty ``dedup_key``, the email's ``Message-ID`` or the
webhook's ``X-Jobqueue-Delivery``, all stable across retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from jobqueue.alerts.channels import EVENTS, KINDS, ChannelConfigError, Notification
from jobqueue.alerts.pagerduty import send_pagerduty
from jobqueue.alerts.slack import send_slack
from jobqueue.alerts.smtp import send_email
from jobqueue.alerts.webhook import send_webhook
from jobqueue.tasks import JobContext, Task, TaskDecorator, TaskHost

ALERTS_QUEUE = "jobqueue.alerts"
NOTIFY_TYPE = "jobqueue.notify"
#: Channel kind -> its sender (one module each).
SENDERS: Mapping[str, Callable[[Notification], dict[str, Any]]] = {
    "email": send_email,
    "slack": send_slack,
    "pagerduty": send_pagerduty,
    "webhook": send_webhook,
}
#: Job types every JobQueue registers on its own (a worker with only these has no user tasks).
BUILTIN_TYPES = frozenset({NOTIFY_TYPE})


def notify(
    ctx: JobContext,
    event: Any = None,
    channel: Any = None,
    incident: Any = None,
    **newer_fields: Any,
) -> dict[str, Any]:
    """Send one notification (the job's payload is the contract above); returns what the
    receiver said, stored as the job's output. Fields a newer producer adds are ignored."""
    if event not in EVENTS:
        raise ChannelConfigError("event", f"must be one of {', '.join(EVENTS)}, not {event!r}")
    if not isinstance(channel, Mapping):
        raise ChannelConfigError("channel", "must be an object with name, kind and config")
    name, kind, config = channel.get("name"), channel.get("kind"), channel.get("config")
    if not isinstance(name, str) or not name:
        raise ChannelConfigError("channel.name", "must be a non-empty string")
    if kind not in KINDS:
        raise ChannelConfigError("channel.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ChannelConfigError("channel.config", "must be an object")
    if not isinstance(incident, Mapping):
        raise ChannelConfigError("incident", "must be an object")
    notification = Notification(
        event=event,
        channel=name,
        kind=kind,
        config=config,
        incident=incident,
        delivery_id=str(ctx.id),
    )
    return {"event": event, "channel": name, "kind": kind, **SENDERS[kind](notification)}


def retry_after(attempt: int, exc: BaseException) -> timedelta | None:
    """The delay before the next attempt: the receiver's Retry-After when it sent one, else
    None (the SQL retry policy of ``jobqueue.notify`` / ``jobqueue.alerts`` decides)."""
    seconds = getattr(exc, "retry_after", None)
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return timedelta(seconds=seconds)
    return None


def register(host: TaskHost) -> Task[Any, Any]:
    """Register ``jobqueue.notify`` on a JobQueue (done by ``JobQueue()`` itself)."""
    existing = host.registry.get(NOTIFY_TYPE)
    if existing is not None:
        return existing
    decorator = TaskDecorator(host, NOTIFY_TYPE, {"queue": ALERTS_QUEUE}, retry=retry_after, unique=None)
    return decorator(notify)
