"""The generic webhook channel: the notification as JSON, signed with HMAC-SHA256.

A receiver checks ``X-Jobqueue-Signature`` (``v1=`` + hex HMAC-SHA256 of
``f"{timestamp}.{body}"``, keyed by the shared secret) and refuses an
``X-Jobqueue-Timestamp`` more than REPLAY_WINDOW_S from its clock; docs/tasks.md has the
recipe.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from jobqueue.alerts.channels import (
    ChannelConfigError,
    Notification,
    config_field,
    config_string,
    http_url,
    json_body,
    post_json,
    read_secret,
)

TIMESTAMP_HEADER = "X-Jobqueue-Timestamp"
SIGNATURE_HEADER = "X-Jobqueue-Signature"
EVENT_HEADER = "X-Jobqueue-Event"
DELIVERY_HEADER = "X-Jobqueue-Delivery"
SIGNATURE_VERSION = "v1"
#: Receivers should refuse a timestamp further than this from their clock (replays).
REPLAY_WINDOW_S = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256, keyed by the secret, over ``f"{timestamp}.{body}"``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def send_webhook(n: Notification) -> dict[str, Any]:
    """POST the notification as JSON, signed: ``X-Jobqueue-Timestamp`` (Unix seconds) and
    ``X-Jobqueue-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``, plus
    ``X-Jobqueue-Event`` and ``X-Jobqueue-Delivery`` (the same on every retry)."""
    url = http_url(n, "url", config_string(n, "url") or "")
    secret = read_secret(n, "secret")
    assert secret is not None
    extra = n.config.get("headers") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ChannelConfigError(config_field(n, "headers"), "must be an object of header names to strings")
    ours = {TIMESTAMP_HEADER, SIGNATURE_HEADER, EVENT_HEADER, DELIVERY_HEADER, "content-type"}
    clash = sorted(k for k in extra if k.lower() in {h.lower() for h in ours})
    if clash:
        raise ChannelConfigError(config_field(n, "headers"), f"{clash[0]} is set by jobqueue")
    body = json_body(
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
