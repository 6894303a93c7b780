"""Alerts (issue 17): rules, detection in reconcile, incidents, routing, notification jobs.

Every condition is real (workers, jobs, sessions, NOTIFY traffic) and database time is moved
by editing rows (last_seen_at, run_at, claimed_at, clear_since, notice times), never by
sleeping. Notifications are checked as the jobs detection enqueues (queue jobqueue.alerts,
type jobqueue.notify): their delivery is the notify handler's business.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from jobqueue import JobQueue
from jobqueue.alerting import env_rule_settings
from jobqueue.errors import ConfigurationError
from tests.chaos.harness import wait_for

Conn = psycopg.Connection[Any]
EMAIL = {"host": "127.0.0.1", "port": 2525, "from": "jobqueue@example.com", "to": ["ops@example.com"]}
PAGERDUTY = {"routing_key_env": "PD_ROUTING_KEY"}
ALERT_TABLES = ("alert_rule", "alert_incident", "alert_channel", "alert_notice", "alert_state", "job", "queue")


def reconcile(db: Conn) -> dict[str, Any]:
    row = db.execute("SELECT jobqueue.reconcile() AS s").fetchone()
    assert row is not None
    return dict(row["s"])


def incidents(db: Conn, state: str = "all") -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM jobqueue.list_alerts(%s, 10000) ORDER BY id", (state,)).fetchall()


def notices(db: Conn) -> list[tuple[str, str, str | None, str]]:
    """(event, channel, incident rule, incident dedupe key) of every notification job, in order."""
    rows = db.execute(
        "SELECT payload->>'event' AS event, payload->'channel'->>'name' AS channel, "
        "payload->'incident'->>'rule' AS rule, payload->'incident'->>'dedupe_key' AS key "
        "FROM jobqueue.jobs WHERE queue = 'jobqueue.alerts' AND type = 'jobqueue.notify' ORDER BY id"
    ).fetchall()
    return [(r["event"], r["channel"], r["rule"], r["key"]) for r in rows]


def channel(db: Conn, name: str, kind: str = "email", config: dict[str, Any] | None = None, **route: Any) -> None:
    db.execute(
        "SELECT jobqueue.add_alert_channel(%s, %s, %s, %s)",
        (name, kind, Jsonb(EMAIL if config is None else config), Jsonb(route)),
    )


def rule(db: Conn, name: str, settings: dict[str, Any], queue: str | None = None, type: str | None = None) -> Any:
    return db.execute(
        "SELECT jobqueue.set_alert_rule(%s, %s, %s, %s) AS r", (name, Jsonb(settings), queue, type)
    ).fetchone()["r"]  # type: ignore[index]


def clear_long_ago(db: Conn) -> None:
    """Move the start of every open incident's clear period an hour back (DB time passes)."""
    db.execute(
        "UPDATE jobqueue.alert_incident SET clear_since = now() - interval '1 hour' WHERE clear_since IS NOT NULL"
    )


def snapshot(db: Conn) -> dict[str, list[str]]:
    out = {}
    for t in ALERT_TABLES:
        rows = db.execute(sql.SQL("SELECT x::text AS r FROM jobqueue.{} x").format(sql.Identifier(t))).fetchall()
        out[t] = sorted(r["r"] for r in rows)
    return out


def only(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == kind]


# -- defaults ----------------------------------------------------------------------------------


def test_default_rules_are_on_out_of_the_box_and_cover_every_kind(db: Conn) -> None:
    rules = db.execute("SELECT * FROM jobqueue.list_alert_rules()").fetchall()
    assert {r["kind"] for r in rules} == {
        "queue_depth",
        "oldest_runnable_age",
        "error_rate",
        "dead_letters",
        "job_stuck",
        "worker_down",
        "reconcile_not_run",
        "xmin_horizon",
        "notify_queue",
    }
    assert all(r["enabled"] and r["builtin"] and r["queue"] is None and r["type"] is None for r in rules)
    assert {r["name"]: r["window_s"] for r in rules if r["kind"] == "error_rate"} == {
        "error_rate_1h": 3600,
        "error_rate_24h": 86400,
    }
    assert all(r["clear_threshold"] <= r["threshold"] for r in rules)
    summary = reconcile(db)
    assert summary["alerts_opened"] == 0 and "alerts_open" not in summary  # work done only
    checked = db.execute("SELECT jobqueue.check_alerts() AS s").fetchone()["s"]  # type: ignore[index]
    assert checked["alerts_open"] == 0  # a quiet database is quiet


# -- each kind fires and resolves --------------------------------------------------------------


def test_worker_down_fires_once_notifies_each_channel_and_resolves_after_the_clear_period(db: Conn) -> None:
    channel(db, "ops")
    channel(db, "pd", "pagerduty", PAGERDUTY)
    db.execute("SELECT jobqueue.register_worker('w1', 'host-a', 4242)")
    db.execute("SELECT jobqueue.register_worker('w2', 'host-b', 4343)")
    assert reconcile(db)["alerts_opened"] == 0
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '5 minutes' WHERE worker_id = 'w1'")
    assert reconcile(db)["alerts_opened"] == 1
    (alert,) = incidents(db)
    assert (alert["kind"], alert["state"], alert["severity"], alert["subject"]) == (
        "worker_down",
        "firing",
        "critical",
        "w1",
    )
    assert alert["value"] >= 300 and alert["threshold"] == 60 and "w1 (host-a pid 4242)" in alert["summary"]
    assert notices(db) == [
        ("trigger", "ops", "worker_down", alert["dedupe_key"]),
        ("trigger", "pd", "worker_down", alert["dedupe_key"]),
    ]
    # still down: counted, not re-opened, not re-notified (repeat interval 4 h)
    reconcile(db)
    (again,) = incidents(db)
    assert again["id"] == alert["id"] and again["count"] == 2 and len(notices(db)) == 2
    # back: clear, but open until it has been clear for resolve_after_s (60 s by default)
    db.execute("SELECT jobqueue.worker_heartbeat('w1')")
    assert reconcile(db)["alerts_resolved"] == 0
    (clearing,) = incidents(db, "open")
    assert clearing["clear_since"] is not None
    clear_long_ago(db)
    assert reconcile(db)["alerts_resolved"] == 1
    (done,) = incidents(db)
    assert done["state"] == "resolved" and done["resolved_at"] is not None and done["resolved_by"] == "reconcile"
    assert [n[:2] for n in notices(db)][2:] == [("resolve", "ops"), ("resolve", "pd")]


def test_a_stopped_worker_is_not_down(db: Conn) -> None:
    db.execute("SELECT jobqueue.register_worker('w1')")
    db.execute("SELECT jobqueue.unregister_worker('w1')")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    reconcile(db)
    assert incidents(db) == []


def test_queue_depth_per_queue_override_fires_only_there(db: Conn) -> None:
    rule(db, "queue_depth", {"threshold": 5, "clear_threshold": 2, "resolve_after_s": 0}, queue="emails")
    for _ in range(6):
        db.execute("SELECT jobqueue.enqueue('send', '{}', queue => 'emails')")
        db.execute("SELECT jobqueue.enqueue('other', '{}', queue => 'bulk')")  # default 10000: quiet
    reconcile(db)
    (alert,) = incidents(db)
    assert (alert["kind"], alert["queue"], alert["value"], alert["threshold"]) == ("queue_depth", "emails", 6, 5)
    db.execute("DELETE FROM jobqueue.job WHERE queue = 'emails'")
    reconcile(db)
    assert incidents(db)[0]["state"] == "resolved"


def test_hysteresis_a_value_hovering_at_the_threshold_keeps_one_incident(db: Conn) -> None:
    """Fires above 10, clears at 5: 11, 10, 11, 10, 8 is one incident that stays open; 5 resolves it
    (resolve_after_s 0); 11 again is a new one."""
    rule(db, "queue_depth", {"threshold": 10, "clear_threshold": 5, "resolve_after_s": 0})
    ids = [
        int(db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'q') AS id").fetchone()["id"]) for _ in range(11)
    ]  # type: ignore[index]

    def depth(n: int) -> None:
        db.execute("UPDATE jobqueue.job SET run_at = now() + interval '1 day' WHERE id = ANY(%s)", (ids[n:],))
        db.execute("UPDATE jobqueue.job SET run_at = now() - interval '1 second' WHERE id = ANY(%s)", (ids[:n],))
        reconcile(db)

    for n in (11, 10, 11, 10, 8):
        depth(n)
        rows = incidents(db)
        assert len(rows) == 1 and rows[0]["state"] == "firing", (n, rows)
    assert rows[0]["count"] == 2  # counted while firing (11 twice), not while hovering
    depth(5)
    assert [r["state"] for r in incidents(db)] == ["resolved"]
    depth(11)
    assert [r["state"] for r in incidents(db)] == ["resolved", "firing"]


def test_oldest_runnable_age_fires_and_resolves(db: Conn) -> None:
    rule(db, "oldest_runnable_age", {"resolve_after_s": 0})
    job = db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'slow', priority => 'high') AS id").fetchone()["id"]  # type: ignore[index]
    db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'slow')")
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '20 minutes' WHERE id = %s", (job,))
    reconcile(db)
    (alert,) = incidents(db)
    assert alert["kind"] == "oldest_runnable_age" and alert["queue"] == "slow" and 1199 < alert["value"] < 1300
    db.execute("SELECT jobqueue.cancel(%s)", (job,))
    reconcile(db)
    assert incidents(db)[0]["state"] == "resolved"


def fail_jobs(db: Conn, n: int, queue: str = "pay", type: str = "charge") -> None:
    """n jobs that run once and fail for good (real claim and fail calls)."""
    db.execute(
        "SELECT jobqueue.enqueue_many(jsonb_agg(jsonb_build_object('type', %s::text, 'queue', %s::text, "
        "'max_attempts', 1))) FROM generate_series(1, %s)",
        (type, queue, n),
    )
    while True:
        done = db.execute(
            "SELECT count(jobqueue.fail(c.id, c.token, 'card declined', 'transient')) AS n "
            "FROM jobqueue.claim(ARRAY[%s], 'w', 1000) c",
            (queue,),
        ).fetchone()["n"]  # type: ignore[index]
        if done == 0:
            return


def test_one_thousand_failing_jobs_make_one_error_rate_incident(db: Conn) -> None:
    db.execute("UPDATE jobqueue.setting SET value = '0' WHERE key = 'alert_tally_lag_s'")
    channel(db, "ops")
    fail_jobs(db, 1000)
    reconcile(db)
    rows = incidents(db)
    errors = only(rows, "error_rate")
    assert len(errors) == 1, rows
    (alert,) = errors
    assert (alert["queue"], alert["value"], alert["state"]) == ("pay", 1.0, "firing")
    assert "1000 failed attempts, 0 completed" in alert["summary"]
    assert len(only(rows, "dead_letters")) == 1  # the same failures as dead letters: one more, not 1000
    error_notices = [n for n in notices(db) if n[3] == alert["dedupe_key"]]
    assert error_notices == [("trigger", "ops", alert["rule"], alert["dedupe_key"])]
    fail_jobs(db, 1000)  # the next thousand: the same incident, counted
    reconcile(db)
    (again,) = only(incidents(db), "error_rate")
    assert again["id"] == alert["id"] and again["count"] == 2
    assert [n for n in notices(db) if n[3] == alert["dedupe_key"]] == error_notices


def test_error_rate_needs_min_events_and_resolves_when_successes_dilute_it(db: Conn) -> None:
    db.execute("UPDATE jobqueue.setting SET value = '0' WHERE key = 'alert_tally_lag_s'")
    rule(db, "error_rate_1h", {"resolve_after_s": 0, "min_events": 20})
    rule(db, "error_rate_24h", {"enabled": False})
    rule(db, "dead_letters", {"enabled": False})
    fail_jobs(db, 10)
    reconcile(db)
    assert incidents(db) == []  # 10 attempts < min_events 20: no verdict
    fail_jobs(db, 10)
    reconcile(db)
    assert [r["kind"] for r in incidents(db, "open")] == ["error_rate"]
    db.execute(
        "SELECT jobqueue.enqueue_many(jsonb_agg(jsonb_build_object('type', 'charge', 'queue', 'pay'))) "
        "FROM generate_series(1, 200)"
    )
    db.execute("SELECT count(jobqueue.complete(c.id, c.token)) FROM jobqueue.claim(ARRAY['pay'], 'w', 1000) c")
    reconcile(db)  # 20 failed / 220 = 9 % <= clear 15 %
    assert [r["state"] for r in incidents(db)] == ["resolved"]


def test_a_type_override_takes_its_jobs_out_of_the_default(db: Conn) -> None:
    db.execute("UPDATE jobqueue.setting SET value = '0' WHERE key = 'alert_tally_lag_s'")
    rule(db, "error_rate_24h", {"enabled": False})
    rule(db, "dead_letters", {"enabled": False})
    rule(db, "error_rate_1h", {"enabled": False}, type="flaky")  # expected to fail: no alert for it
    fail_jobs(db, 50, type="flaky")
    fail_jobs(db, 50, type="charge")
    reconcile(db)
    (alert,) = incidents(db)
    assert (alert["queue"], alert["type"], alert["kind"]) == ("pay", None, "error_rate")
    assert "50 failed attempts" in alert["summary"]  # charge's only


def test_job_stuck_fires_even_while_heartbeating_and_resolves_when_it_ends(db: Conn) -> None:
    db.execute("SELECT jobqueue.enqueue('report', '{}', queue => 'batch')")
    job = db.execute("SELECT * FROM jobqueue.claim(ARRAY['batch'], 'w', 1, interval '3 hours')").fetchone()
    assert job is not None
    db.execute("UPDATE jobqueue.job SET claimed_at = now() - interval '2 hours' WHERE id = %s", (job["id"],))
    db.execute("SELECT * FROM jobqueue.heartbeat(%s, %s)", (job["id"], job["token"]))
    reconcile(db)
    (alert,) = incidents(db)
    assert (alert["kind"], alert["queue"], alert["type"]) == ("job_stuck", "batch", None)
    assert alert["value"] >= 7200
    db.execute("SELECT jobqueue.complete(%s, %s)", (job["id"], job["token"]))
    reconcile(db)
    assert incidents(db)[0]["state"] == "resolved"


def test_reconcile_not_run_fires_on_a_gap_and_check_alerts_sees_it_without_reconcile(db: Conn) -> None:
    reconcile(db)
    db.execute("UPDATE jobqueue.maintenance SET last_run_at = now() - interval '10 minutes'")
    db.execute("UPDATE jobqueue.alert_state SET last_reconcile = now() - interval '10 minutes'")
    summary = db.execute("SELECT jobqueue.check_alerts() AS s").fetchone()["s"]  # type: ignore[index]
    assert summary["alerts_opened"] == 1
    (alert,) = incidents(db)
    assert alert["kind"] == "reconcile_not_run" and alert["value"] >= 600
    reconcile(db)  # runs again: the gap is now small, clear from now
    reconcile(db)
    (clearing,) = incidents(db)
    assert clearing["state"] == "firing" and clearing["clear_since"] is not None
    clear_long_ago(db)
    reconcile(db)
    assert incidents(db)[0]["state"] == "resolved"


def test_xmin_horizon_fires_while_a_transaction_is_held_open(db: Conn, connect: Callable[..., Conn]) -> None:
    rule(db, "xmin_horizon", {"threshold": 0.05, "clear_threshold": 0, "resolve_after_s": 0})
    holder = connect(autocommit=False)
    holder.execute("SELECT txid_current()")
    wait_for(
        lambda: db.execute(
            "SELECT clock_timestamp() - xact_start > interval '100 ms' AS ok FROM pg_stat_activity WHERE pid = %s",
            (holder.info.backend_pid,),
        ).fetchone()["ok"],  # type: ignore[index]
        5,
        "the held transaction to age",
    )
    reconcile(db)
    (alert,) = incidents(db)
    assert alert["kind"] == "xmin_horizon" and alert["value"] > 0.05
    holder.rollback()
    reconcile(db)
    assert incidents(db)[0]["state"] == "resolved"


def test_notify_queue_fires_while_a_listener_falls_behind(db: Conn, connect: Callable[..., Conn]) -> None:
    rule(db, "notify_queue", {"threshold": 0, "resolve_after_s": 0})
    listener = connect(autocommit=False)
    listener.execute("LISTEN jq_test_backlog")
    listener.commit()  # listening from here
    listener.execute("SELECT 1")  # then in a transaction: it reads nothing, the queue cannot shrink

    def backlog() -> bool:
        db.execute("SELECT pg_notify('jq_test_backlog', repeat('x', 7000)) FROM generate_series(1, 300)")
        return bool(db.execute("SELECT pg_notification_queue_usage() > 0 AS ok").fetchone()["ok"])  # type: ignore[index]

    wait_for(backlog, 30, "the NOTIFY queue to hold the listener's backlog")
    reconcile(db)
    assert [r["kind"] for r in incidents(db)] == ["notify_queue"]
    listener.rollback()
    listener.close()  # gone: the queue drains (other databases of a shared server may still use some)
    rule(db, "notify_queue", {"threshold": 0.5, "clear_threshold": 0.4})
    reconcile(db)
    assert incidents(db)[0]["state"] == "resolved"


# -- routing, repeats, acknowledgement ---------------------------------------------------------


def test_routing_by_severity_kind_rule_and_queue(db: Conn) -> None:
    channel(db, "all", min_severity="info")
    channel(db, "critical-only", min_severity="critical")
    channel(db, "workers", kinds=["worker_down"])
    channel(db, "emails-queue", queues=["emails"])
    channel(db, "by-rule", rules=["queue_depth"])
    channel(db, "off", enabled=False)
    rule(db, "queue_depth", {"threshold": 0, "severity": "info"}, queue="emails")
    db.execute("SELECT jobqueue.enqueue('send', '{}', queue => 'emails')")
    db.execute("SELECT jobqueue.register_worker('w1')")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    reconcile(db)
    got = sorted((n[2], n[1]) for n in notices(db))
    assert got == [
        ("queue_depth", "all"),
        ("worker_down", "all"),
        ("worker_down", "critical-only"),
        ("worker_down", "workers"),
    ]  # emails-queue and by-rule want warning or more; the info depth alert is below them
    rule(db, "queue_depth", {"severity": "warning"}, queue="emails")
    db.execute("DELETE FROM jobqueue.alert_incident")
    reconcile(db)
    new = sorted((n[2], n[1]) for n in notices(db)[4:])
    assert ("queue_depth", "emails-queue") in new and ("queue_depth", "by-rule") in new
    assert ("worker_down", "emails-queue") not in new and all(c != "off" for _, c in new)


def test_repeat_interval_repeats_a_firing_alert_until_acknowledged(db: Conn) -> None:
    channel(db, "ops", repeat_interval_s=600)
    channel(db, "quiet", repeat_interval_s=None)
    db.execute("SELECT jobqueue.register_worker('w1')")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    reconcile(db)
    reconcile(db)
    assert [n[:2] for n in notices(db)] == [("trigger", "ops"), ("trigger", "quiet")]
    db.execute("UPDATE jobqueue.alert_notice SET at = at - interval '11 minutes'")
    reconcile(db)
    reconcile(db)  # the repeat just sent: not again
    assert [n[:2] for n in notices(db)][2:] == [("repeat", "ops")]
    db.execute("UPDATE jobqueue.alert_notice SET at = at - interval '11 minutes'")
    (alert,) = incidents(db)
    db.execute("SELECT jobqueue.ack_alert(%s, 'alice')", (alert["id"],))
    reconcile(db)
    assert [n[:2] for n in notices(db)][3:] == [("acknowledge", "ops"), ("acknowledge", "quiet")]


def test_ack_notifies_once_and_refuses_resolved_and_unknown_alerts(db: Conn) -> None:
    channel(db, "pd", "pagerduty", PAGERDUTY)
    db.execute("SELECT jobqueue.register_worker('w1')")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    reconcile(db)
    (alert,) = incidents(db)
    acked = db.execute("SELECT jobqueue.ack_alert(%s, 'alice') AS a", (alert["id"],)).fetchone()["a"]  # type: ignore[index]
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "alice" and acked["acknowledged_at"]
    again = db.execute("SELECT jobqueue.ack_alert(%s, 'bob') AS a", (alert["id"],)).fetchone()["a"]  # type: ignore[index]
    assert again["acknowledged_by"] == "alice"
    assert [n[0] for n in notices(db)] == ["trigger", "acknowledge"]
    payload = db.execute(
        "SELECT payload FROM jobqueue.jobs WHERE type = 'jobqueue.notify' AND payload->>'event' = 'acknowledge'"
    ).fetchone()["payload"]  # type: ignore[index]
    assert payload["incident"]["state"] == "acknowledged" and payload["incident"]["acknowledged_by"] == "alice"
    db.execute("SELECT jobqueue.resolve_alert(%s)", (alert["id"],))
    assert [n[0] for n in notices(db)] == ["trigger", "acknowledge", "resolve"]
    before = snapshot(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute("SELECT jobqueue.ack_alert(%s)", (alert["id"],))
    assert err.value.diag.column_name == "id" and "is resolved" in str(err.value)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("SELECT jobqueue.resolve_alert(%s)", (alert["id"],))
    with pytest.raises(psycopg.errors.NoDataFound) as missing:
        db.execute("SELECT jobqueue.ack_alert(987654)")
    assert missing.value.diag.column_name == "id"
    assert snapshot(db) == before


def test_notification_payload_follows_the_contract(db: Conn) -> None:
    channel(db, "hook", "webhook", {"url": "https://hooks.example.com/x", "secret_env": "HOOK_SECRET"})
    db.execute("SELECT jobqueue.register_worker('w1')")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    reconcile(db)
    job = db.execute("SELECT * FROM jobqueue.jobs WHERE queue = 'jobqueue.alerts'").fetchone()
    assert job is not None and job["type"] == "jobqueue.notify" and job["state"] == "pending"
    payload = job["payload"]
    assert set(payload) == {"event", "channel", "incident"} and payload["event"] == "trigger"
    assert payload["channel"] == {
        "name": "hook",
        "kind": "webhook",
        "config": {"url": "https://hooks.example.com/x", "secret_env": "HOOK_SECRET"},
    }
    assert set(payload["incident"]) == {
        "id",
        "dedupe_key",
        "rule",
        "kind",
        "severity",
        "state",
        "queue",
        "type",
        "value",
        "threshold",
        "first_seen",
        "last_seen",
        "count",
        "acknowledged_by",
        "acknowledged_at",
        "resolved_at",
        "summary",
    }
    test_id = db.execute("SELECT jobqueue.test_alert_channel('hook') AS id").fetchone()["id"]  # type: ignore[index]
    test = db.execute("SELECT payload FROM jobqueue.jobs WHERE id = %s", (test_id,)).fetchone()["payload"]  # type: ignore[index]
    assert test["test"] is True and test["event"] == "trigger" and test["channel"]["name"] == "hook"


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_reconcilers_open_one_incident_and_enqueue_each_notification_once(
    db: Conn, connect: Callable[..., Conn]
) -> None:
    channel(db, "ops")
    channel(db, "pd", "pagerduty", PAGERDUTY)
    for i in range(5):
        db.execute("SELECT jobqueue.register_worker(%s)", (f"w{i}",))
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    conns = [connect() for _ in range(6)]
    for round_ in range(3):
        barrier = threading.Barrier(len(conns))
        errors: list[BaseException] = []

        def run(conn: Conn, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait(10)
                conn.execute("SELECT jobqueue.reconcile()")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [], errors
        rows = incidents(db)
        assert len(rows) == 5 and len({r["dedupe_key"] for r in rows}) == 5, (round_, rows)
        sent = notices(db)
        assert len(sent) == 10 and len(set(sent)) == 10, (round_, sent)


# -- bad input ---------------------------------------------------------------------------------

BAD_RULES = [
    ("kind", "new_rule", {"kind": "disk_full", "threshold": 1}, None),
    ("threshold", "queue_depth", {"threshold": -1}, None),
    ("threshold", "queue_depth", {"threshold": "lots"}, None),
    ("threshold", "error_rate_1h", {"threshold": 1.5}, None),
    ("clear_threshold", "queue_depth", {"threshold": 10, "clear_threshold": 20}, None),
    ("severity", "queue_depth", {"severity": "urgent"}, None),
    ("window_s", "error_rate_1h", {"window_s": 10}, None),
    ("queue", "worker_down", {"threshold": 10}, "emails"),
    ("enabled", "queue_depth", {"enabled": "yes"}, None),
    ("thresold", "queue_depth", {"thresold": 5}, None),
]
BAD_CHANNELS = [
    ("config.url", "slack", {"url": "ftp://hooks.example.com/x"}),
    ("config.url", "webhook", {"url": "javascript:alert(1)", "secret_env": "S"}),
    ("config.port", "email", {**EMAIL, "port": 70000}),
    ("config.port", "email", {**EMAIL, "port": "25"}),
    ("config.to", "email", {**EMAIL, "to": []}),
    ("config.password", "email", {**EMAIL, "username": "u", "password": "hunter2"}),
    ("config.routing_key", "pagerduty", {"routing_key": "R0UT1NG"}),
    ("config.secret", "webhook", {"url": "https://x.example.com", "secret": "s3cr3t"}),
    ("config.token", "slack", {"url": "https://hooks.slack.com/x", "token": "t"}),
    ("config.routing_key_env", "pagerduty", {}),
    ("config.password_env", "email", {**EMAIL, "username": "u", "password_env": "not a name"}),
    ("kind", "sms", {"to": "+100"}),
    (
        "config.headers",
        "webhook",
        {"url": "https://x.example.com", "secret_env": "S", "headers": {"Authorization": "x"}},
    ),
]


@pytest.mark.parametrize(("field", "name", "settings", "queue"), BAD_RULES)
def test_bad_rules_name_the_field_and_change_nothing(
    db: Conn, field: str, name: str, settings: dict[str, Any], queue: str | None
) -> None:
    before = snapshot(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        rule(db, name, settings, queue=queue)
    assert err.value.diag.column_name == field and str(err.value).startswith(field + ":"), str(err.value)
    assert snapshot(db) == before


@pytest.mark.parametrize(("field", "kind", "config"), BAD_CHANNELS)
def test_bad_channels_name_the_field_and_change_nothing(
    db: Conn, field: str, kind: str, config: dict[str, Any]
) -> None:
    channel(db, "existing")
    before = snapshot(db)
    for name in ("new", "existing"):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
            channel(db, name, kind, config)
        assert err.value.diag.column_name == field, str(err.value)
        assert str(err.value).startswith(field), str(err.value)
    assert snapshot(db) == before


def test_bad_routes_name_the_field_and_change_nothing(db: Conn) -> None:
    channel(db, "ops")
    before = snapshot(db)
    for field, route in [
        ("route.kinds", {"kinds": ["disk_full"]}),
        ("route.min_severity", {"min_severity": "loud"}),
        ("route.repeat_interval_s", {"repeat_interval_s": 5}),
        ("route.queues", {"queues": ["bad queue"]}),
        ("route.colour", {"colour": "red"}),
    ]:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
            db.execute("SELECT jobqueue.set_alert_route('ops', %s)", (Jsonb(route),))
        assert err.value.diag.column_name == field, str(err.value)
    assert snapshot(db) == before


def test_built_in_rules_are_disabled_not_removed(db: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="built-in"):
        db.execute("SELECT jobqueue.remove_alert_rule('worker_down')")
    rule(db, "queue_depth", {"threshold": 3}, queue="q")
    assert db.execute("SELECT jobqueue.remove_alert_rule('queue_depth', 'q') AS r").fetchone()["r"] is True  # type: ignore[index]
    assert db.execute("SELECT jobqueue.remove_alert_rule('queue_depth', 'q') AS r").fetchone()["r"] is False  # type: ignore[index]


def test_a_new_threshold_keeps_the_rules_clear_ratio(db: Conn) -> None:
    changed = rule(db, "queue_depth", {"threshold": 500})
    assert (changed["threshold"], changed["clear_threshold"]) == (500, 400)
    seconds = rule(db, "worker_down", {"threshold": "2 minutes"})
    assert (seconds["threshold"], seconds["clear_threshold"]) == (120, 60)


# -- tenancy and privileges --------------------------------------------------------------------


def test_tenants_see_no_alerts_and_their_reconcile_skips_detection(
    db: Conn, connect: Callable[..., Conn], login_role: Callable[[str], str]
) -> None:
    admin = login_role("jobqueue_admin")
    worker = login_role("jobqueue_worker")
    # mapped directly: set_tenant_role refuses while a superuser owns the schema (RLS would not
    # apply to it), which is this test database's case; the alert checks read the same mapping
    db.execute(
        "INSERT INTO jobqueue.tenant_role (role_name, tenant_id) VALUES (%s, 'acme'), (%s, 'acme')", (admin, worker)
    )
    db.execute("SELECT jobqueue.register_worker('w1')")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    reconcile(db)
    assert len(incidents(db)) == 1
    tenant_admin, tenant_worker = connect(user=admin), connect(user=worker)
    assert tenant_admin.execute("SELECT count(*) AS n FROM jobqueue.alerts").fetchone()["n"] == 0  # type: ignore[index]
    for statement in (
        "SELECT * FROM jobqueue.list_alerts()",
        "SELECT jobqueue.ack_alert(1)",
        "SELECT jobqueue.set_alert_rule('queue_depth', '{\"threshold\": 1}')",
        "SELECT jobqueue.add_alert_channel('x', 'slack', '{\"url_env\": \"U\"}')",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            tenant_admin.execute(statement)
    summary = tenant_worker.execute("SELECT jobqueue.reconcile() AS s").fetchone()["s"]  # type: ignore[index]
    assert summary["alerts_skipped"] == "tenant"
    assert incidents(db)[0]["count"] == 1


def test_a_worker_role_runs_detection_through_reconcile_but_cannot_read_alerts(
    db: Conn, connect: Callable[..., Conn], login_role: Callable[[str], str]
) -> None:
    worker = connect(user=login_role("jobqueue_worker"))
    db.execute("SELECT jobqueue.register_worker('w1')")
    db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    assert worker.execute("SELECT jobqueue.reconcile() AS s").fetchone()["s"]["alerts_opened"] == 1  # type: ignore[index]
    for statement in ("SELECT * FROM jobqueue.alerts", "SELECT * FROM jobqueue.alert_incident"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker.execute(statement)


# -- library and environment -------------------------------------------------------------------


def test_library_calls_and_env_thresholds(db_url: str, db: Conn) -> None:
    with JobQueue(db_url, pool_size=2) as jq:
        changed = jq.apply_alert_env(
            {
                "JOBQUEUE_ALERT_QUEUE_DEPTH": "2500",
                "JOBQUEUE_ALERT_WORKER_DOWN_AFTER": "90",
                "JOBQUEUE_ALERT_ERROR_RATE_24H_ENABLED": "false",
                "JOBQUEUE_ALERT_JOB_STUCK_SEVERITY": "critical",
                "UNRELATED": "x",
            }
        )
        assert sorted(r["name"] for r in changed) == ["error_rate_24h", "job_stuck", "queue_depth", "worker_down"]
        rules = {r["name"]: r for r in jq.alert_rules()}
        assert rules["queue_depth"]["threshold"] == 2500 and rules["worker_down"]["threshold"] == 90
        assert rules["error_rate_24h"]["enabled"] is False and rules["job_stuck"]["severity"] == "critical"
        assert jq.apply_alert_env({"JOBQUEUE_ALERT_QUEUE_DEPTH": "2500"}) == []  # unchanged: nothing written
        with pytest.raises(ConfigurationError, match="JOBQUEUE_ALERT_QUEUE_DEPTH: threshold"):
            jq.apply_alert_env({"JOBQUEUE_ALERT_QUEUE_DEPTH": "-5"})
        assert {r["name"]: r for r in jq.alert_rules()}["queue_depth"]["threshold"] == 2500
        jq.add_alert_channel("ops", "email", EMAIL, {"min_severity": "critical"})
        assert [c["name"] for c in jq.alert_channels()] == ["ops"]
        db.execute("SELECT jobqueue.register_worker('w1')")
        db.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
        assert jq.check_alerts()["alerts_opened"] == 1
        (alert,) = jq.alerts()
        shown = jq.get_alert(alert["id"])
        assert [n["event"] for n in shown["notifications"]] == ["trigger"]
        assert shown["notifications"][0]["job_state"] == "pending"
        assert jq.ack_alert(alert["id"], "carol")["acknowledged_by"] == "carol"
        assert jq.resolve_alert(alert["id"])["state"] == "resolved"
        assert jq.test_alert_channel("ops") > 0
        assert jq.remove_alert_channel("ops") is True


def test_env_variable_names_are_checked() -> None:
    assert env_rule_settings({"JOBQUEUE_ALERT_ERROR_RATE_1H": "0.3", "JOBQUEUE_ALERT_ERROR_RATE_1H_CLEAR": ".2"}) == {
        "error_rate_1h": {"threshold": 0.3, "clear_threshold": 0.2}
    }
    assert env_rule_settings({"JOBQUEUE_ALERT_OLDEST_RUNNABLE_AGE": "15 minutes"}) == {
        "oldest_runnable_age": {"threshold": "15 minutes"}
    }
    with pytest.raises(ConfigurationError, match="JOBQUEUE_ALERT_QUEUE_DEPHT"):
        env_rule_settings({"JOBQUEUE_ALERT_QUEUE_DEPHT": "5"})
    with pytest.raises(ConfigurationError, match="JOBQUEUE_ALERT_WORKER_DOWN_ENABLED: must be true or false"):
        env_rule_settings({"JOBQUEUE_ALERT_WORKER_DOWN_ENABLED": "maybe"})
