"""Pure parts of the alert channels: Retry-After, the webhook signature, the message text."""

from __future__ import annotations

import email.utils
import hashlib
import hmac

from jobqueue.alerts.channels import RETRY_AFTER_MAX_S, Notification, retry_after_seconds
from jobqueue.alerts.notify import retry_after
from jobqueue.alerts.webhook import signature


def test_retry_after_in_seconds_or_as_an_http_date_capped() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(email.utils.formatdate(now + 42, usegmt=True), now) == 42.0
    assert retry_after_seconds(email.utils.formatdate(now - 42, usegmt=True), now) == 0.0  # past: at once
    assert retry_after_seconds("999999", now) == RETRY_AFTER_MAX_S
    assert retry_after_seconds(None, now) is None
    assert retry_after_seconds("soon", now) is None


def test_the_notify_task_hands_retry_after_to_the_worker_and_otherwise_defers_to_sql() -> None:
    class Limited(Exception):
        retry_after = 3.0

    assert retry_after(1, Limited()).total_seconds() == 3.0  # type: ignore[union-attr]
    assert retry_after(1, ValueError("x")) is None


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"event":"trigger"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", "1700000000", body) == f"v1={expected}"


def test_the_text_leaves_out_empty_fields() -> None:
    n = Notification(
        event="acknowledge",
        channel="c",
        kind="email",
        config={},
        incident={"id": 1, "severity": "warning", "summary": "queue q deep", "queue": "q", "type": None, "count": 3},
        delivery_id="9",
    )
    assert n.title == "[warning] ACKNOWLEDGED: queue q deep"
    lines = n.text().splitlines()
    assert lines[0] == n.title and "Queue:    q" in lines and "Count:    3" in lines
    assert not any(line.startswith("Job type") for line in lines)
