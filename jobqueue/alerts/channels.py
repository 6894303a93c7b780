"""What every notification channel shares: the notification, the errors that decide a job's
fate, reading a channel's config and secrets, and posting JSON over HTTP.

The senders, one file each: :mod:`~jobqueue.alerts.smtp` (email),
:mod:`~jobqueue.alerts.slack`, :mod:`~jobqueue.alerts.pagerduty`,
:mod:`~jobqueue.alerts.webhook`; :mod:`~jobqueue.alerts.notify` picks one per job.

A sender gets a :class:`Notification` (the event, the channel's name and config, the
incident) and delivers it once, or raises. What it raises decides what happens to the job
(through the ``error_class`` attribute that :func:`jobqueue.retry.classify` reads first):

* :class:`ChannelConfigError` (``validation``): the channel's config or the payload is
  wrong, e.g. the environment variable named by ``password_env`` is not set. Retrying
  cannot help: the job is dead-lettered at once, its error naming the field.
* :class:`DeliveryRefused` (``permanent``): the receiver refused the message for good (an
  HTTP 4xx other than 408/425/429, an SMTP 5xx, a certificate that does not verify).
* :class:`DeliveryFailed` (``transient``): worth another try (a connection error, a
  timeout, HTTP 429 or 5xx, an SMTP 4xx). ``retry_after`` carries the receiver's
  ``Retry-After`` in seconds when it sent one; the notify task hands it to the worker as
  that attempt's delay.

Secrets are never in the database: a channel names an environment variable (``*_env``) or
a file (``*_file``) and the sender reads it at send time, in the worker's process.

HTTP goes through the standard library (urllib) with a timeout; a channel URL must be
http(s). Error messages show a URL's scheme and host only: a Slack webhook URL is a secret.
"""

from __future__ import annotations

import email.utils
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

KINDS = ("email", "slack", "pagerduty", "webhook")
EVENTS = ("trigger", "repeat", "acknowledge", "resolve")

#: Seconds a send may take (connect, TLS, request, answer) unless the channel sets timeout_s.
SEND_TIMEOUT_S = 10.0
TIMEOUT_MAX_S = 300.0
#: A Retry-After longer than this is cut to it (the notification is still worth sending).
RETRY_AFTER_MAX_S = 3600.0
#: Bytes of an error answer kept in the job's error message.
ERROR_BODY_CHARS = 300

_TRANSIENT_HTTP = frozenset({408, 425, 429})
_EVENT_TITLES = {
    "trigger": "FIRING",
    "repeat": "STILL FIRING",
    "acknowledge": "ACKNOWLEDGED",
    "resolve": "RESOLVED",
}
_USER_AGENT = "jobqueue-alerts/1"


class NotifyError(Exception):
    """A notification could not be sent."""

    error_class = "transient"


class ChannelConfigError(NotifyError):
    """The channel's configuration (or the notification's payload) is not valid."""

    error_class = "validation"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        #: The offending field, as a path into the job's payload (e.g. channel.config.port).
        self.field = field


class DeliveryRefused(NotifyError):
    """The receiver refused the notification; sending it again would not help."""

    error_class = "permanent"


class DeliveryFailed(NotifyError):
    """The receiver could not be reached or asked to try later."""

    error_class = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the receiver asked to wait (its Retry-After), None when it said nothing.
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notification:
    """One notification to send: what happened to which incident, and where to send it."""

    event: str
    channel: str
    kind: str
    config: Mapping[str, Any]
    incident: Mapping[str, Any]
    #: Stable across the retries of one notification (its job id): receivers may dedupe on it.
    delivery_id: str

    @property
    def title(self) -> str:
        """``[critical] FIRING: <summary>``: an email's subject, a chat message's first line."""
        severity = self.incident.get("severity") or "alert"
        summary = self.incident.get("summary") or self.incident.get("rule") or self.incident.get("dedupe_key")
        return f"[{severity}] {_EVENT_TITLES.get(self.event, self.event.upper())}: {summary}"

    def details(self) -> list[tuple[str, str]]:
        """The incident's fields worth reading, as (label, text), empty ones left out."""
        i = self.incident
        rows = [
            ("Rule", i.get("rule")),
            ("Kind", i.get("kind")),
            ("Severity", i.get("severity")),
            ("State", i.get("state")),
            ("Queue", i.get("queue")),
            ("Job type", i.get("type")),
            ("Value", i.get("value")),
            ("Threshold", i.get("threshold")),
            ("First seen", i.get("first_seen")),
            ("Last seen", i.get("last_seen")),
            ("Count", i.get("count")),
            ("Acknowledged by", i.get("acknowledged_by")),
            ("Acknowledged at", i.get("acknowledged_at")),
            ("Resolved at", i.get("resolved_at")),
            ("Incident", i.get("id")),
            ("Dedupe key", i.get("dedupe_key")),
        ]
        return [(label, str(value)) for label, value in rows if value is not None and value != ""]

    def text(self) -> str:
        """A plain-text body: the title, then one ``Label: value`` line per detail."""
        width = max((len(label) for label, _ in self.details()), default=0)
        lines = [self.title, ""] + [f"{label + ':':<{width + 1}} {value}" for label, value in self.details()]
        return "\n".join(lines) + "\n"


# -- configuration and secrets ----------------------------------------------------------------


def config_field(n: Notification, key: str) -> str:
    return f"channel.config.{key}"


def config_string(n: Notification, key: str, *, required: bool = True) -> str | None:
    value = n.config.get(key)
    if value is None or value == "":
        if required:
            raise ChannelConfigError(config_field(n, key), "is required")
        return None
    if not isinstance(value, str):
        raise ChannelConfigError(config_field(n, key), f"must be a string, not {type(value).__name__}")
    return value


def config_bool(n: Notification, key: str) -> bool:
    value = n.config.get(key, False)
    if not isinstance(value, bool):
        raise ChannelConfigError(config_field(n, key), f"must be true or false, not {value!r}")
    return value


def config_timeout(n: Notification) -> float:
    value = n.config.get("timeout_s", SEND_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= TIMEOUT_MAX_S:
        raise ChannelConfigError(
            config_field(n, "timeout_s"), f"must be seconds in (0, {TIMEOUT_MAX_S:g}], not {value!r}"
        )
    return float(value)


def read_secret(n: Notification, name: str, *, plain: bool = False, required: bool = True) -> str | None:
    """The secret ``name`` read now: from ``name`` itself (only where ``plain`` is allowed),
    else the environment variable ``name_env`` names, else the file ``name_file`` names."""
    given = [k for k in ((name,) if plain else ()) + (f"{name}_env", f"{name}_file") if n.config.get(k)]
    if len(given) > 1:
        raise ChannelConfigError(config_field(n, given[1]), f"give only one of {', '.join(given)}")
    if not given:
        if required:
            keys = ([name] if plain else []) + [f"{name}_env", f"{name}_file"]
            raise ChannelConfigError(config_field(n, f"{name}_env"), f"one of {', '.join(keys)} is required")
        return None
    key = given[0]
    source = config_string(n, key)
    assert source is not None
    if key == name:
        return source
    if key.endswith("_env"):
        value = os.environ.get(source)
        if not value:
            raise ChannelConfigError(config_field(n, key), f"environment variable {source!r} is not set (or empty)")
        return value
    try:
        with open(source, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as exc:
        raise ChannelConfigError(config_field(n, key), f"cannot read {source!r}: {exc.strerror or exc}") from exc
    if not value:
        raise ChannelConfigError(config_field(n, key), f"{source!r} is empty")
    return value


def http_url(n: Notification, key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ChannelConfigError(config_field(n, key), f"must be an http(s) URL, not one with scheme {parts.scheme!r}")
    return value


def shown_url(url: str) -> str:
    """A URL safe to put in an error: scheme and host only (webhook paths carry secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


# -- HTTP -----------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """An HTTP Retry-After (seconds, or an HTTP date) in seconds from now, at most
    RETRY_AFTER_MAX_S; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    seconds: float
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def post_json(n: Notification, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> int:
    """POST ``body`` (JSON) to ``url``; the answer's status when it is 2xx, else raise:
    DeliveryFailed for 408/425/429/5xx and connection errors, DeliveryRefused for the rest."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT, **(headers or {})},
    )
    where = f"{n.kind} channel {n.channel!r} ({shown_url(url)})"
    try:
        with urllib.request.urlopen(request, timeout=config_timeout(n)) as response:
            response.read(65536)
            status: int = response.status
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(ERROR_BODY_CHARS).decode("utf-8", "replace").strip()
        except (OSError, HTTPException):
            detail = ""
        message = f"{where} answered HTTP {exc.code}{f': {detail}' if detail else ''}"
        if exc.code in _TRANSIENT_HTTP or exc.code >= 500:
            raise DeliveryFailed(message, retry_after=retry_after_seconds(exc.headers.get("Retry-After"))) from None
        raise DeliveryRefused(message) from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryRefused(f"{where}: certificate not trusted: {exc.verify_message or exc}") from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DeliveryFailed(f"{where}: {type(exc).__name__}: {reason}") from None
    if not 200 <= status < 300:  # a redirect urllib did not follow
        raise DeliveryRefused(f"{where} answered HTTP {status}")
    return status


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()
