"""The Slack channel: a message through an incoming webhook (its URL is a secret)."""

from __future__ import annotations

from typing import Any

from jobqueue.alerts.channels import Notification, http_url, json_body, post_json, read_secret


def send_slack(n: Notification) -> dict[str, Any]:
    """A Slack incoming webhook: ``text`` (the fallback, and what notifications show) and
    ``blocks`` (a header-like line and the incident's fields)."""
    url = http_url(n, "url", read_secret(n, "url", plain=True) or "")
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{value}"} for label, value in n.details()[:10]]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{n.title}*"}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    status = post_json(n, url, json_body({"text": n.title, "blocks": blocks}))
    return {"status": status}
