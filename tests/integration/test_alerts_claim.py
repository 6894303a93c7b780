"""The alerts queue is claimed apart from a worker's regular claim (jobqueue.alerts.claiming).

The regular claim names the worker's configured queues only, so a one-queue worker keeps
claim()'s one-queue path (an ordered scan of job_claim_idx) on the hot path; the alerts
queue is looked at on a NOTIFY for it, after an idle wait, before a burst worker exits, and
at most every poll interval otherwise. A notification still goes ahead of a backlog, and
promptly: well within the poll interval, through its NOTIFY.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, JobState, WorkerConfig
from jobqueue.alerts.claiming import AlertsClaim
from jobqueue.alerts.notify import ALERTS_QUEUE, NOTIFY_TYPE
from jobqueue.worker import Worker
from tests.support.receivers import HttpReceiver

#: Long enough that only a NOTIFY (or a wait running out) explains a prompt delivery.
SLOW_POLL_S = 30.0


@pytest.fixture
def jq(db_url: str) -> Iterator[JobQueue]:
    queue = JobQueue(db_url, pool_size=4)

    @queue.task(name="user.work")
    def work() -> None:
        time.sleep(0.02)

    yield queue
    queue.close()


def notify(jq: JobQueue, url: str) -> int:
    payload = {
        "event": "trigger",
        "channel": {"name": "slack-1", "kind": "slack", "config": {"url": url}},
        "incident": {"id": 1, "dedupe_key": "k", "rule": "r", "severity": "critical", "summary": "s"},
    }
    return jq.enqueue(NOTIFY_TYPE, payload, queue=ALERTS_QUEUE)


def live(db: psycopg.Connection[Any], queue: str) -> int:
    row = db.execute("SELECT count(*) AS n FROM jobqueue.job WHERE queue = %s", (queue,)).fetchone()
    assert row is not None
    return int(row["n"])


def test_the_regular_claim_names_the_configured_queues_only(jq: JobQueue) -> None:
    worker = Worker(jq, WorkerConfig(install_signal_handlers=False))
    assert worker.queues == ("default", ALERTS_QUEUE)  # served, listened to, registered
    assert worker.claim_queues == ["default"]  # claimed in every round: claim()'s one-queue path
    assert worker.alerts is not None
    assert worker._claim_params(worker.claim_queues, 7)["queues"] == ["default"]
    # a worker told to serve the alerts queue claims it in its regular claim, as configured
    both = Worker(jq, WorkerConfig(queues=("default", ALERTS_QUEUE), install_signal_handlers=False))
    assert both.claim_queues == ["default", ALERTS_QUEUE] and both.alerts is None
    # --no-alerts: neither
    none = Worker(jq, WorkerConfig(alerts=False, install_signal_handlers=False))
    assert none.claim_queues == ["default"] and none.alerts is None and none.queues == ("default",)


def test_a_notification_goes_ahead_of_a_backlog_promptly_and_the_alerts_queue_is_seldom_claimed(
    jq: JobQueue, db: psycopg.Connection[Any], http_receiver: HttpReceiver
) -> None:
    jq.enqueue_many([{"type": "user.work", "payload": {}} for _ in range(600)])
    config = WorkerConfig(
        install_signal_handlers=False, concurrency=4, poll_interval_s=SLOW_POLL_S, reconcile_interval_s=0
    )
    worker = Worker(jq, config)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while worker.jobs_done < 40:  # draining the backlog, one full claim after another
            assert time.monotonic() < deadline, "the worker did not start draining"
            time.sleep(0.02)
        assert worker.alerts is not None
        looks_before = worker.alerts.looks
        sent = time.monotonic()
        job_id = notify(jq, http_receiver.url("/slack"))
        http_receiver.wait_for(1)
        took = time.monotonic() - sent
        backlog_left = live(db, "default")
        done_then = worker.jobs_done
    finally:
        worker.stop()
        thread.join(60)
    assert codes == [0]
    # through its NOTIFY, not the (30 s) poll; and ahead of the backlog, which was not drained
    assert took < SLOW_POLL_S / 3, f"delivered after {took:.1f}s"
    assert backlog_left > 0
    assert jq.get(job_id).state == JobState.COMPLETED
    # the alerts queue was claimed from a handful of times (start, the NOTIFY), not once per
    # round of the regular claim, which ran once per few jobs
    assert worker.alerts.looks - looks_before <= 3
    assert worker.alerts.looks <= 6 < done_then / 4


def test_a_burst_worker_leaves_no_notification_behind(jq: JobQueue, http_receiver: HttpReceiver) -> None:
    ids: list[int] = []

    @jq.task(name="user.raise_alarm")
    def raise_alarm() -> None:
        # enqueued after the worker's first look at the alerts queue, with no LISTEN to hear it
        ids.append(notify(jq, http_receiver.url("/slack")))

    jq.enqueue("user.raise_alarm", {})
    config = WorkerConfig(install_signal_handlers=False, burst=True, poll_interval_s=SLOW_POLL_S, listen=False)
    started = time.monotonic()
    assert jq.run_worker(config) == 0
    assert time.monotonic() - started < SLOW_POLL_S / 3
    assert len(ids) == 1 and jq.get(ids[0]).state == JobState.COMPLETED and len(http_receiver.requests) == 1


def test_take_looks_on_request_and_at_most_every_interval() -> None:
    claim = AlertsClaim(every_s=10.0)
    assert claim.take(100.0)  # at start
    assert not claim.take(101.0)
    claim.notified()
    assert claim.take(102.0) and not claim.take(103.0)
    assert claim.take(112.0)  # the interval since the last look ran out
    claim.claimed(asked=10, got=10)  # a full batch: maybe more, look again next round
    assert claim.take(112.5)
    claim.claimed(asked=10, got=3)
    assert not claim.take(113.0)
