"""Schedules from Python: declarations (@jq.task(schedule=...), jq.periodic), the worker's
sync at start (undeclared schedules paused with a log line), and the library methods."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue
from jobqueue.errors import InvalidInput, JobNotFound
from jobqueue.worker import WorkerConfig

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def jq(db_url: str) -> Iterator[JobQueue]:
    queue = JobQueue(db_url, pool_size=4, application_name="billing")
    yield queue
    queue.close()


def view(db: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in db.execute("SELECT * FROM jobqueue.schedules").fetchall()}


def test_declarations_are_synced_and_dropped_ones_paused_with_a_log_line(
    db_url: str, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with JobQueue(db_url, application_name="billing") as v1:

        @v1.task(name="report.hourly", queue="reports", priority="high", timeout=timedelta(minutes=5),
                 schedule="0 * * * *", tz="Europe/Berlin", missed="latest")
        def hourly() -> None: ...

        v1.periodic("cleanup", "0 3 * * *", "db.cleanup", {"days": 30}, missed="all", max_backfill=3)
        assert v1.sync_schedules() == {"upserted": ["cleanup", "report.hourly"], "paused": [], "resumed": []}
    got = view(db)
    assert got["report.hourly"]["cron"] == "0 * * * *" and got["report.hourly"]["tz"] == "Europe/Berlin"
    assert got["report.hourly"]["job"] == {"type": "report.hourly", "queue": "reports", "priority": "high",
                                           "timeout": 300.0}
    assert got["report.hourly"]["missed"] == "latest" and got["report.hourly"]["declared_by"] == "billing"
    assert got["cleanup"]["job"] == {"type": "db.cleanup", "payload": {"days": 30}}
    assert got["cleanup"]["max_backfill"] == 3

    # the next release no longer declares "cleanup": a worker start pauses it and says so
    with JobQueue(db_url, application_name="billing") as v2:

        @v2.task(name="report.hourly", queue="reports", priority="high", timeout=timedelta(minutes=5),
                 schedule="0 * * * *", tz="Europe/Berlin", missed="latest")
        def hourly2() -> None: ...

        with caplog.at_level(logging.INFO, logger="jobqueue.schedules"):
            config = WorkerConfig(burst=True, install_signal_handlers=False, poll_interval_s=0.05,
                                  reconcile_interval_s=0, queues=("reports",))
            assert v2.run_worker(config) == 0
    got = view(db)
    assert got["cleanup"]["paused"] and got["cleanup"]["paused_reason"] == "undeclared"
    assert not got["report.hourly"]["paused"]
    messages = [r.getMessage() for r in caplog.records if r.name == "jobqueue.schedules"]
    assert any("cleanup" in m and "no longer declared by billing" in m and "paused" in m for m in messages)


def test_another_app_never_pauses_these_schedules(db_url: str, db: psycopg.Connection[Any]) -> None:
    with JobQueue(db_url, application_name="billing") as a:
        a.periodic("invoices", "@daily", "invoice.run")
        a.sync_schedules()
    with JobQueue(db_url, application_name="mailer") as b:
        assert b.sync_schedules() == {"upserted": [], "paused": [], "resumed": []}
    assert not view(db)["invoices"]["paused"]


def test_library_methods_mirror_the_sql_api(jq: JobQueue) -> None:
    s = jq.set_schedule("nightly", "30 2 * * *", {"type": "cleanup"}, tz="Europe/Berlin", missed="latest")
    assert s["name"] == "nightly" and s["next_fire_at"]
    nxt = jq.schedule_next("nightly", 3)
    assert len(nxt) == 3 and nxt == jq.cron_next("30 2 * * *", tz="Europe/Berlin", n=3)
    assert [r["name"] for r in jq.schedules()] == ["nightly"]
    assert jq.pause_schedule("nightly")["paused"] is True
    assert jq.resume_schedule("nightly")["paused"] is False
    assert jq.remove_schedule("nightly") is True
    assert jq.remove_schedule("nightly") is False
    assert jq.cron_next("0 0 1 1 *", after=datetime(2026, 6, 1, tzinfo=UTC)) == [datetime(2027, 1, 1, tzinfo=UTC)]


def test_library_errors_name_the_field(jq: JobQueue) -> None:
    with pytest.raises(InvalidInput) as info:
        jq.set_schedule("x", "*/5 * * * 8", {"type": "t"})
    assert info.value.field == "cron" and "position 11" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        jq.set_schedule("x", "@daily", {"type": "t"}, tz="Nowhere/Special")
    assert info.value.field == "tz"
    with pytest.raises(JobNotFound):
        jq.pause_schedule("nope")
    with pytest.raises(InvalidInput) as info:
        jq.periodic("p", "@daily", "t", missed="sometimes")
    assert info.value.field == "missed"
    jq.periodic("bad", "61 * * * *", "t")
    with pytest.raises(InvalidInput) as info:
        jq.sync_schedules()
    assert info.value.field == "schedules[0].cron"
    assert jq.schedules() == []
