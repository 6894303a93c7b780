"""Alert notifications are jobs: contract-shaped ``jobqueue.notify`` jobs on ``jobqueue.alerts``,
run by an ordinary worker, delivered to real receivers on loopback (tests/support/receivers.py):
an aiosmtpd SMTP server (plain, STARTTLS with login, implicit TLS) and an HTTP server standing
in for Slack, PagerDuty and a signed webhook. 429/5xx are retried (Retry-After honoured), other
4xx and bad channel config are dead-lettered at once with an error naming the field.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, JobState, WorkerConfig
from jobqueue.alerts.notify import ALERTS_QUEUE, NOTIFY_TYPE
from jobqueue.models import TERMINAL_STATES, Job
from jobqueue.worker import Worker
from tests.support.receivers import HttpReceiver, SmtpReceiver, self_signed_cert

#: Retries at once, so a test waits for the receiver, not for a back-off.
NO_BACKOFF = {"strategy": "fixed", "initial_delay": 0, "jitter": 0}

INCIDENT = {
    "id": 42,
    "dedupe_key": "worker_down:host-1:123",
    "rule": "worker_down",
    "kind": "worker_down",
    "severity": "critical",
    "state": "firing",
    "queue": "default",
    "type": None,
    "value": 31.5,
    "threshold": 30,
    "first_seen": "2026-12-06T15:00:00+00:00",
    "last_seen": "2026-12-06T15:00:05+00:00",
    "count": 1,
    "acknowledged_by": None,
    "acknowledged_at": None,
    "resolved_at": None,
    "summary": "worker host-1:123 missed its heartbeats for 31.5 s",
}


@pytest.fixture
def jq(db_url: str) -> Iterator[JobQueue]:
    queue = JobQueue(db_url, pool_size=4)

    @queue.task(name="user.noop")
    def noop() -> None:
        """A user task, so the worker is an ordinary app's worker (queue default)."""

    yield queue
    queue.close()


@contextmanager
def running_worker(jq: JobQueue, **options: Any) -> Iterator[Worker]:
    """An ordinary worker (queue ``default``) running in a thread until the block ends."""
    config = WorkerConfig(install_signal_handlers=False, poll_interval_s=0.05, reconcile_interval_s=0, **options)
    worker = Worker(jq, config)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
    assert codes == [0]


def notify(jq: JobQueue, event: str, kind: str, config: dict[str, Any], **options: Any) -> int:
    """Enqueue a notification exactly as the database's alert step does (the contract)."""
    payload = {"event": event, "channel": {"name": f"{kind}-1", "kind": kind, "config": config}, "incident": INCIDENT}
    return jq.enqueue(NOTIFY_TYPE, payload, queue=ALERTS_QUEUE, **options)


def finished(jq: JobQueue, job_id: int, timeout: float = 30.0) -> Job:
    """The job once it reached a terminal state."""
    deadline = time.monotonic() + timeout
    while True:
        job = jq.get(job_id)
        if job.state in TERMINAL_STATES:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.state} after {timeout:g}s: {job.errors}")
        time.sleep(0.05)


# -- email ----------------------------------------------------------------------------------


def test_an_ordinary_worker_sends_the_email_of_a_notification_job(jq: JobQueue, smtp_receiver: SmtpReceiver) -> None:
    job_id = notify(
        jq,
        "trigger",
        "email",
        {"host": "127.0.0.1", "port": smtp_receiver.port, "from": "jobqueue@example.com", "to": ["ops@example.com"]},
    )
    with running_worker(jq):  # queues=("default",): the alerts queue is claimed besides it
        mail = smtp_receiver.wait_for(1)[0]
        job = finished(jq, job_id)
    assert job.state == JobState.COMPLETED, job.errors
    assert job.output["kind"] == "email" and job.output["recipients"] == 1
    assert mail.mail_from == "jobqueue@example.com" and mail.rcpt_tos == ["ops@example.com"]
    assert mail.message["Subject"] == "[critical] FIRING: worker host-1:123 missed its heartbeats for 31.5 s"
    assert mail.message["Message-ID"] == f"<jobqueue.{job_id}.trigger@example.com>"
    body = mail.message.get_content()
    assert "Rule:" in body and "worker_down" in body and "Dedupe key:" in body and "worker_down:host-1:123" in body
    assert "Threshold:" in body and "30" in body


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_email_over_starttls_or_implicit_tls_with_a_login(
    jq: JobQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    cert = self_signed_cert(tmp_path)
    receiver = SmtpReceiver(mode, cert, logins={"alerts": "s3cret"}).start()
    password_file = tmp_path / "smtp-password"
    password_file.write_text("s3cret\n")
    try:
        config = {
            "host": "127.0.0.1",
            "port": receiver.port,
            "from": "jobqueue@example.com",
            "to": ["a@example.com", "b@example.com"],
            "starttls": mode == "starttls",
            "ssl": mode == "ssl",
            "username": "alerts",
            "password_file": str(password_file),
        }
        if mode == "starttls":  # the test CA through the worker's environment, as docs/tasks.md says
            monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
        else:  # or the sender's ca_file
            config["ca_file"] = str(cert[0])
        job_id = notify(jq, "resolve", "email", config)
        with running_worker(jq):
            mail = receiver.wait_for(1)[0]
            job = finished(jq, job_id)
    finally:
        receiver.stop()
    assert job.state == JobState.COMPLETED, job.errors
    assert mail.tls and mail.login == "alerts"
    assert mail.rcpt_tos == ["a@example.com", "b@example.com"]
    assert str(mail.message["Subject"]).strip().startswith("[critical] RESOLVED: ")  # a long one is folded


def test_an_untrusted_certificate_is_dead_lettered_not_retried(jq: JobQueue, tmp_path: Path) -> None:
    receiver = SmtpReceiver("starttls", self_signed_cert(tmp_path)).start()
    try:
        config = {"host": "127.0.0.1", "port": receiver.port, "from": "j@example.com", "to": ["o@example.com"]}
        job_id = notify(jq, "trigger", "email", {**config, "starttls": True})  # no ca_file: not trusted
        with running_worker(jq):
            job = finished(jq, job_id)
    finally:
        receiver.stop()
    assert job.state == JobState.DEAD_LETTER and job.reason == "permanent_error"
    assert job.attempt == 1 and "certificate not trusted" in job.last_error
    assert receiver.mails == []


# -- Slack, PagerDuty, webhook --------------------------------------------------------------


def test_slack_pagerduty_and_a_signed_webhook_get_what_they_expect(
    jq: JobQueue, http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JQ_TEST_PD_KEY", "R0UTING")
    monkeypatch.setenv("JQ_TEST_HOOK_SECRET", "hook-secret")
    http_receiver.secret = "hook-secret"
    url_file = tmp_path / "slack-url"
    url_file.write_text(http_receiver.url("/slack/T000/B000/XXXX") + "\n")
    pd = {"routing_key_env": "JQ_TEST_PD_KEY", "url": http_receiver.url("/pagerduty")}
    ids = [
        notify(jq, "trigger", "slack", {"url_file": str(url_file)}),
        notify(jq, "trigger", "pagerduty", pd),
        notify(jq, "repeat", "pagerduty", pd),
        notify(jq, "acknowledge", "pagerduty", pd),
        notify(jq, "resolve", "pagerduty", pd),
        notify(
            jq,
            "trigger",
            "webhook",
            {"url": http_receiver.url("/hook"), "secret_env": "JQ_TEST_HOOK_SECRET", "headers": {"X-Team": "ops"}},
        ),
    ]
    with running_worker(jq, concurrency=1):  # one slot: the PagerDuty events arrive in order
        http_receiver.wait_for(len(ids))
        jobs = [finished(jq, i) for i in ids]
    assert [j.state for j in jobs] == [JobState.COMPLETED] * len(ids), [j.errors for j in jobs]
    by_path: dict[str, list[Any]] = {}
    for request in http_receiver.requests:
        by_path.setdefault(request.path.split("/")[1], []).append(request)

    slack = by_path["slack"][0].json
    assert slack["text"] == "[critical] FIRING: worker host-1:123 missed its heartbeats for 31.5 s"
    assert slack["blocks"][0]["text"]["text"] == f"*{slack['text']}*"

    events = [r.json for r in by_path["pagerduty"]]
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {"worker_down:host-1:123"}
    assert {e["routing_key"] for e in events} == {"R0UTING"}
    assert events[0]["payload"]["severity"] == "critical" and events[0]["payload"]["source"] == "default"
    assert events[0]["payload"]["summary"].startswith("[critical] FIRING")
    assert "payload" not in events[2] and "payload" not in events[3]

    hook = by_path["hook"][0]
    assert hook.signature_error is None  # verified by the docs' recipe, with the shared secret
    assert hook.headers["X-Jobqueue-Event"] == "trigger" and hook.headers["X-Team"] == "ops"
    assert hook.headers["X-Jobqueue-Delivery"] == str(ids[-1])
    assert hook.json["incident"] == INCIDENT and hook.json["event"] == "trigger"


def test_a_webhook_signed_with_another_secret_does_not_verify(
    jq: JobQueue, http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver's check is real: the wrong secret is caught."""
    monkeypatch.setenv("JQ_TEST_HOOK_SECRET", "not-the-shared-one")
    http_receiver.secret = "hook-secret"
    notify(jq, "trigger", "webhook", {"url": http_receiver.url("/hook"), "secret_env": "JQ_TEST_HOOK_SECRET"})
    with running_worker(jq):
        request = http_receiver.wait_for(1)[0]
    assert request.signature_error == "bad signature"


# -- retries and dead letters ---------------------------------------------------------------


def test_5xx_is_retried_with_backoff_until_it_goes_through(jq: JobQueue, http_receiver: HttpReceiver) -> None:
    http_receiver.answer(500, times=2, body=b"upstream down")
    job_id = notify(jq, "trigger", "slack", {"url": http_receiver.url("/slack")}, retry_policy=NO_BACKOFF)
    with running_worker(jq):
        http_receiver.wait_for(3)
        job = finished(jq, job_id)
    assert job.state == JobState.COMPLETED and job.attempt == 3
    assert [r.status for r in http_receiver.requests] == [500, 500, 200]
    assert [e["error_class"] for e in job.errors] == ["transient", "transient"]
    assert "answered HTTP 500: upstream down" in job.errors[0]["message"]
    assert "/slack" not in job.errors[0]["message"]  # a Slack URL is a secret: scheme and host only


def test_429_is_retried_after_the_receivers_retry_after(
    jq: JobQueue, http_receiver: HttpReceiver, db: psycopg.Connection[Any]
) -> None:
    http_receiver.answer(429, headers={"Retry-After": "1"})
    job_id = notify(jq, "trigger", "slack", {"url": http_receiver.url("/slack")}, retry_policy=NO_BACKOFF)
    with running_worker(jq):
        http_receiver.wait_for(2)
        job = finished(jq, job_id)
    assert job.state == JobState.COMPLETED and job.attempt == 2
    row = db.execute(
        "SELECT detail FROM jobqueue.job_event WHERE job_id = %s AND to_state = 'retrying'", (job_id,)
    ).fetchone()
    assert row is not None and row["detail"]["retry_in_s"] == 1  # not the policy's 0: the receiver's


def test_5xx_for_good_is_dead_lettered_after_its_attempts(jq: JobQueue, http_receiver: HttpReceiver) -> None:
    http_receiver.answer(503, times=10)
    job_id = notify(
        jq,
        "trigger",
        "pagerduty",
        {"routing_key_file": __file__, "url": http_receiver.url("/pd")},
        retry_policy=NO_BACKOFF,
        max_attempts=3,
    )
    with running_worker(jq):
        job = finished(jq, job_id)
    assert job.state == JobState.DEAD_LETTER and job.reason == "max_retries_exceeded"
    assert len(http_receiver.requests) == 3 and job.attempt == 3


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_other_4xx_is_dead_lettered_at_once(jq: JobQueue, http_receiver: HttpReceiver, status: int) -> None:
    http_receiver.answer(status, body=b"invalid_payload")
    job_id = notify(jq, "trigger", "slack", {"url": http_receiver.url("/slack")}, retry_policy=NO_BACKOFF)
    with running_worker(jq):
        job = finished(jq, job_id)
    assert job.state == JobState.DEAD_LETTER and job.reason == "permanent_error"
    assert job.attempt == 1 and len(http_receiver.requests) == 1
    assert job.errors[0]["error_class"] == "permanent"
    assert f"answered HTTP {status}: invalid_payload" in job.last_error


def test_a_receiver_that_is_down_is_retried(jq: JobQueue) -> None:
    receiver = HttpReceiver()
    receiver.server.server_close()  # its port, now closed: connections are refused
    job_id = notify(jq, "trigger", "slack", {"url": receiver.url("/slack")}, retry_policy=NO_BACKOFF, max_attempts=2)
    with running_worker(jq):
        job = finished(jq, job_id)
    assert job.state == JobState.DEAD_LETTER and job.reason == "max_retries_exceeded"
    assert [e["error_class"] for e in job.errors] == ["transient", "transient"]
    assert "Connection refused" in job.last_error or "ConnectionRefused" in job.last_error


BAD_CONFIGS = [
    (
        "email",
        {
            "host": "127.0.0.1",
            "port": 25,
            "from": "a@b",
            "to": ["c@d"],
            "username": "u",
            "password_env": "JQ_TEST_UNSET_VARIABLE",
        },
        "channel.config.password_env",
    ),
    ("email", {"host": "127.0.0.1", "port": 70000, "from": "a@b", "to": ["c@d"]}, "channel.config.port"),
    ("email", {"host": "127.0.0.1", "port": 25, "from": "a@b", "to": []}, "channel.config.to"),
    (
        "email",
        {"host": "127.0.0.1", "port": 25, "from": "a@b", "to": ["c@d"], "starttls": True, "ssl": True},
        "channel.config.ssl",
    ),
    ("slack", {"url": "ftp://example.com/x"}, "channel.config.url"),
    ("slack", {"url_file": "/nonexistent/jobqueue-slack-url"}, "channel.config.url_file"),
    ("pagerduty", {}, "channel.config.routing_key_env"),
    ("pagerduty", {"routing_key_env": "JQ_TEST_UNSET_VARIABLE"}, "channel.config.routing_key_env"),
    ("webhook", {"url": "http://127.0.0.1:9/x"}, "channel.config.secret_env"),
    (
        "webhook",
        {"url": "http://127.0.0.1:9/x", "secret_env": "PATH", "headers": {"X-Jobqueue-Signature": "x"}},
        "channel.config.headers",
    ),
    ("sms", {}, "channel.kind"),
]


def test_bad_channel_config_is_dead_lettered_at_once_naming_the_field(
    jq: JobQueue, http_receiver: HttpReceiver, db: psycopg.Connection[Any]
) -> None:
    ids = [notify(jq, "trigger", kind, config, retry_policy=NO_BACKOFF) for kind, config, _ in BAD_CONFIGS]
    bad_event = jq.enqueue(NOTIFY_TYPE, {"event": "explode", "channel": {}, "incident": {}}, queue=ALERTS_QUEUE)
    with running_worker(jq):
        jobs = [finished(jq, i) for i in [*ids, bad_event]]
    for job, field in zip(jobs, [f for _, _, f in BAD_CONFIGS] + ["event"], strict=True):
        assert job.state == JobState.DEAD_LETTER and job.reason == "permanent_error", (field, job.errors)
        assert job.attempt == 1 and job.errors[0]["error_class"] == "validation"
        assert job.last_error.startswith(f"ChannelConfigError: {field}: "), job.last_error
    assert http_receiver.requests == []


def test_a_channel_test_from_the_database_reaches_the_receiver(
    jq: JobQueue, http_receiver: HttpReceiver, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jobqueue alerts channels test``'s SQL function: its payload (with an extra "test" key)
    is delivered by an ordinary worker, signed."""
    monkeypatch.setenv("JQ_TEST_HOOK_SECRET", "hook-secret")
    http_receiver.secret = "hook-secret"
    config = {"url": http_receiver.url("/hook"), "secret_env": "JQ_TEST_HOOK_SECRET"}
    db.execute("SELECT jobqueue.add_alert_channel('hook', 'webhook', %s)", (json.dumps(config),))
    row = db.execute("SELECT jobqueue.test_alert_channel('hook') AS id").fetchone()
    assert row is not None
    with running_worker(jq):
        request = http_receiver.wait_for(1)[0]
        job = finished(jq, row["id"])
    assert job.state == JobState.COMPLETED, job.errors
    assert request.signature_error is None and request.json["incident"]["rule"] == "test"
    assert request.headers["X-Jobqueue-Delivery"] == str(row["id"])


# -- which workers run notifications --------------------------------------------------------


def test_a_worker_with_no_alerts_leaves_notifications_to_others(jq: JobQueue, http_receiver: HttpReceiver) -> None:
    job_id = notify(jq, "trigger", "slack", {"url": http_receiver.url("/slack")})
    user_job = jq.enqueue("user.noop", {})
    with running_worker(jq, alerts=False) as worker:
        assert finished(jq, user_job).state == JobState.COMPLETED
        assert worker.queues == ("default",)
    assert jq.get(job_id).state == JobState.PENDING and http_receiver.requests == []
    with running_worker(jq) as worker:
        assert finished(jq, job_id).state == JobState.COMPLETED
        assert worker.queues == ("default", "jobqueue.alerts")
