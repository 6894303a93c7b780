"""Notification channels: one sender per kind (email, slack, pagerduty, webhook).

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
import hashlib
import hmac
import json
import os
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
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

#: The signed webhook's headers (docs/tasks.md, "Alert notifications", has the recipe).
TIMESTAMP_HEADER = "X-Jobqueue-Timestamp"
SIGNATURE_HEADER = "X-Jobqueue-Signature"
EVENT_HEADER = "X-Jobqueue-Event"
DELIVERY_HEADER = "X-Jobqueue-Delivery"
SIGNATURE_VERSION = "v1"
#: Receivers should refuse a timestamp further than this from their clock (replays).
REPLAY_WINDOW_S = 300

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


def _field(n: Notification, key: str) -> str:
    return f"channel.config.{key}"


def _string(n: Notification, key: str, *, required: bool = True) -> str | None:
    value = n.config.get(key)
    if value is None or value == "":
        if required:
            raise ChannelConfigError(_field(n, key), "is required")
        return None
    if not isinstance(value, str):
        raise ChannelConfigError(_field(n, key), f"must be a string, not {type(value).__name__}")
    return value


def _bool(n: Notification, key: str) -> bool:
    value = n.config.get(key, False)
    if not isinstance(value, bool):
        raise ChannelConfigError(_field(n, key), f"must be true or false, not {value!r}")
    return value


def _timeout(n: Notification) -> float:
    value = n.config.get("timeout_s", SEND_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= TIMEOUT_MAX_S:
        raise ChannelConfigError(_field(n, "timeout_s"), f"must be seconds in (0, {TIMEOUT_MAX_S:g}], not {value!r}")
    return float(value)


def _secret(n: Notification, name: str, *, plain: bool = False, required: bool = True) -> str | None:
    """The secret ``name`` read now: from ``name`` itself (only where ``plain`` is allowed),
    else the environment variable ``name_env`` names, else the file ``name_file`` names."""
    given = [k for k in ((name,) if plain else ()) + (f"{name}_env", f"{name}_file") if n.config.get(k)]
    if len(given) > 1:
        raise ChannelConfigError(_field(n, given[1]), f"give only one of {', '.join(given)}")
    if not given:
        if required:
            keys = ([name] if plain else []) + [f"{name}_env", f"{name}_file"]
            raise ChannelConfigError(_field(n, f"{name}_env"), f"one of {', '.join(keys)} is required")
        return None
    key = given[0]
    source = _string(n, key)
    assert source is not None
    if key == name:
        return source
    if key.endswith("_env"):
        value = os.environ.get(source)
        if not value:
            raise ChannelConfigError(_field(n, key), f"environment variable {source!r} is not set (or empty)")
        return value
    try:
        with open(source, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as exc:
        raise ChannelConfigError(_field(n, key), f"cannot read {source!r}: {exc.strerror or exc}") from exc
    if not value:
        raise ChannelConfigError(_field(n, key), f"{source!r} is empty")
    return value


def _http_url(n: Notification, key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ChannelConfigError(_field(n, key), f"must be an http(s) URL, not one with scheme {parts.scheme!r}")
    return value


def _shown(url: str) -> str:
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
    where = f"{n.kind} channel {n.channel!r} ({_shown(url)})"
    try:
        with urllib.request.urlopen(request, timeout=_timeout(n)) as response:
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


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


# -- senders --------------------------------------------------------------------------------


def send_email(n: Notification) -> dict[str, Any]:
    """SMTP: plain (``starttls`` false), STARTTLS (``starttls`` true) or implicit TLS
    (``ssl`` true, usually port 465); login when ``username`` is given, with the password
    from ``password_env`` / ``password_file``. ``ca_file`` trusts a private CA."""
    host = _string(n, "host")
    assert host is not None
    port = n.config.get("port", 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ChannelConfigError(_field(n, "port"), f"must be a port number 1-65535, not {port!r}")
    sender = _string(n, "from")
    recipients = n.config.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) and r for r in recipients):
        raise ChannelConfigError(_field(n, "to"), "must be a non-empty list of addresses")
    starttls, implicit = _bool(n, "starttls"), _bool(n, "ssl")
    if starttls and implicit:
        raise ChannelConfigError(_field(n, "ssl"), "give ssl (implicit TLS) or starttls, not both")
    username = _string(n, "username", required=False)
    password = _secret(n, "password", required=username is not None)
    if password is not None and username is None:
        raise ChannelConfigError(_field(n, "username"), "is required when a password is given")
    timeout = _timeout(n)
    context: ssl.SSLContext | None = None
    if starttls or implicit:
        ca_file = _string(n, "ca_file", required=False)
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except OSError as exc:
            raise ChannelConfigError(_field(n, "ca_file"), f"cannot load {ca_file!r}: {exc}") from exc

    message = EmailMessage()
    message["Subject"] = n.title
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.formatdate(localtime=False)
    # The same id on every retry of this notification: mail clients show a duplicate once.
    message["Message-ID"] = f"<jobqueue.{n.delivery_id}.{n.event}@{_domain(sender)}>"
    message["X-Jobqueue-Incident"] = str(n.incident.get("id", ""))
    message["X-Jobqueue-Event"] = n.event
    message.set_content(n.text())

    where = f"email channel {n.channel!r} ({host}:{port})"
    try:
        smtp: smtplib.SMTP
        if implicit:
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if starttls:
                smtp.starttls(context=context)
            if username is not None and password is not None:
                smtp.login(username, password)
            refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryRefused(f"{where}: certificate not trusted: {exc.verify_message or exc}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryRefused(f"{where}: {exc}") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryRefused(f"{where}: login refused: {exc.smtp_code} {_smtp_text(exc.smtp_error)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {addr: code for addr, (code, _) in exc.recipients.items()}
        if all(400 <= code < 500 for code in codes.values()):
            raise DeliveryFailed(f"{where}: recipients deferred: {codes}") from None
        raise DeliveryRefused(f"{where}: recipients refused: {codes}") from None
    except smtplib.SMTPResponseException as exc:
        text = f"{where}: {exc.smtp_code} {_smtp_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            raise DeliveryFailed(text) from None
        raise DeliveryRefused(text) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"{where}: {type(exc).__name__}: {exc}") from None
    return {"recipients": len(recipients), "refused": sorted(refused)}


def _domain(address: str | None) -> str:
    _, addr = email.utils.parseaddr(address or "")
    return addr.rpartition("@")[2] or socket.getfqdn() or "localhost"


def _smtp_text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def send_slack(n: Notification) -> dict[str, Any]:
    """A Slack incoming webhook: ``text`` (the fallback, and what notifications show) and
    ``blocks`` (a header-like line and the incident's fields)."""
    url = _http_url(n, "url", _secret(n, "url", plain=True) or "")
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{value}"} for label, value in n.details()[:10]]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{n.title}*"}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    status = post_json(n, url, _json({"text": n.title, "blocks": blocks}))
    return {"status": status}


def send_pagerduty(n: Notification) -> dict[str, Any]:
    """PagerDuty Events API v2: trigger (and ``repeat``, a trigger again, which PagerDuty
    folds into the open alert), acknowledge, resolve; ``dedup_key`` is the incident's
    dedupe key, so every event lands on the same PagerDuty alert."""
    key = _secret(n, "routing_key")
    url = _http_url(n, "url", _string(n, "url", required=False) or PAGERDUTY_URL)
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
    status = post_json(n, url, _json(body))
    return {"status": status, "event_action": action, "dedup_key": dedup_key}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256, keyed by the secret, over ``f"{timestamp}.{body}"``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def send_webhook(n: Notification) -> dict[str, Any]:
    """POST the notification as JSON, signed: ``X-Jobqueue-Timestamp`` (Unix seconds) and
    ``X-Jobqueue-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``, plus
    ``X-Jobqueue-Event`` and ``X-Jobqueue-Delivery`` (the same on every retry)."""
    url = _http_url(n, "url", _string(n, "url") or "")
    secret = _secret(n, "secret")
    assert secret is not None
    extra = n.config.get("headers") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ChannelConfigError(_field(n, "headers"), "must be an object of header names to strings")
    ours = {TIMESTAMP_HEADER, SIGNATURE_HEADER, EVENT_HEADER, DELIVERY_HEADER, "content-type"}
    clash = sorted(k for k in extra if k.lower() in {h.lower() for h in ours})
    if clash:
        raise ChannelConfigError(_field(n, "headers"), f"{clash[0]} is set by jobqueue")
    body = _json(
        {
            "event": n.event,
            "channel": n.channel,
            "delivery": n.delivery_id,
            "sent_at": datetime.now(UTC).isoformat(),
            "incident": dict(n.incident),
        }
    )
    timestamp = str(int(time.time()))
    headers = {
        **extra,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_HEADER: n.event,
        DELIVERY_HEADER: n.delivery_id,
    }
    status = post_json(n, url, body, headers)
    return {"status": status}


SENDERS: Mapping[str, Callable[[Notification], dict[str, Any]]] = {
    "email": send_email,
    "slack": send_slack,
    "pagerduty": send_pagerduty,
    "webhook": send_webhook,
}


def send(n: Notification) -> dict[str, Any]:
    """Deliver one notification through its channel's sender (see the module doc for errors)."""
    sender = SENDERS.get(n.kind)
    if sender is None:
        raise ChannelConfigError("channel.kind", f"must be one of {', '.join(KINDS)}, not {n.kind!r}")
    return sender(n)
