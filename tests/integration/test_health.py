"""jobqueue.health(): the alert checks (OPS-03, RELIABILITY 2.2), on real sessions.

Database time is moved by editing rows (as the rest of the suite does), never by sleeping;
the one wait is for a held transaction to become older than a threshold of 50 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from jobqueue import InvalidInput, JobQueue
from tests.chaos.harness import wait_for

Conn = psycopg.Connection[Any]
CHECKS = [
    "oldest_xmin_age_s",
    "oldest_xmin_age_xids",
    "reconcile_last_run_age_s",
    "lease_overdue_s",
    "expired_leases",
    "notify_queue_usage",
    "oldest_pending_age_s",
    "dead_letters",
]


def health(db: Conn, **thresholds: Any) -> dict[str, dict[str, Any]]:
    args = ", ".join(f"{name} => %({name})s" for name in thresholds)
    rows = db.execute(f"SELECT * FROM jobqueue.health({args})", thresholds).fetchall()
    assert [r["check_name"] for r in rows] == CHECKS
    return {r["check_name"]: r for r in rows}


#: Sessions of the whole server, but the asking one, that hold an xid or a snapshot.
HOLDERS = "pid <> pg_backend_pid() AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)"


def oldest_holders(db: Conn) -> tuple[int, int]:
    """(pid of the oldest open transaction, pid holding the oldest xid), as the superuser sees it."""
    row = db.execute(
        f"SELECT (SELECT pid FROM pg_stat_activity WHERE {HOLDERS} AND xact_start IS NOT NULL "
        "        ORDER BY xact_start LIMIT 1) AS by_age, "
        f"(SELECT pid FROM pg_stat_activity WHERE {HOLDERS} "
        "        ORDER BY greatest(age(backend_xid), age(backend_xmin)) DESC LIMIT 1) AS by_xids"
    ).fetchone()
    assert row is not None
    return int(row["by_age"]), int(row["by_xids"])


def holders_besides_me(db: Conn) -> int:
    """Sessions of the whole server, but this one, holding an xid or a snapshot."""
    row = db.execute(
        f"SELECT count(*) AS n FROM pg_stat_activity WHERE {HOLDERS}"
    ).fetchone()
    assert row is not None
    return int(row["n"])


def stamp(db: Conn) -> Any:
    return db.execute("SELECT last_run_at FROM jobqueue.maintenance WHERE step = 'reconcile'").fetchone()


def test_a_quiet_database_after_reconcile_has_no_alert(db: Conn) -> None:
    before = health(db)
    assert before["reconcile_last_run_age_s"]["alert"] is True
    assert before["reconcile_last_run_age_s"]["detail"] == "reconcile has never run"
    db.execute("SELECT jobqueue.reconcile()")
    after = health(db)
    assert [name for name, row in after.items() if row["alert"]] == []
    assert 0 <= after["reconcile_last_run_age_s"]["value"] < 60
    # the defaults, and the two checks that are off unless asked for
    assert after["oldest_xmin_age_s"]["threshold"] == 300
    assert after["oldest_xmin_age_xids"]["threshold"] == 100_000_000
    assert after["oldest_pending_age_s"]["threshold"] is None
    assert after["dead_letters"]["threshold"] is None


@pytest.mark.serial  # the oldest xmin is the whole server's
def test_oldest_xmin_alert_names_the_held_transaction_and_clears(db: Conn, connect: Callable[..., Conn]) -> None:
    """RELIABILITY 2.2 / SOAK-01: an idle-in-transaction session holding an xid fires both
    oldest-xmin checks, naming its pid; it clears when the transaction ends."""
    holder = connect(autocommit=False, application_name="held-open")
    holder.execute("SELECT txid_current()")
    pid = holder.info.backend_pid
    for _ in range(5):  # other transactions move the xid horizon on
        db.execute("SELECT txid_current()")
    row = wait_for(
        lambda: (h := health(db, max_xmin_age="50 milliseconds", max_xmin_xids=3))["oldest_xmin_age_s"]["alert"] and h,
        10,
        "the held transaction to be older than 50 ms",
    )
    # The checks name the oldest holder of the whole server: ours, unless another session
    # (a test run beside this one) held one from before.
    by_age, by_xids = oldest_holders(db)
    expected = f"pid {pid} (held-open, idle in transaction, user " if by_age == pid else f"pid {by_age} ("
    assert row["oldest_xmin_age_s"]["detail"].startswith(expected)
    assert row["oldest_xmin_age_xids"]["alert"] is True and row["oldest_xmin_age_xids"]["value"] >= 5
    assert row["oldest_xmin_age_xids"]["detail"].startswith(f"pid {by_xids} (")
    holder.rollback()
    cleared = health(db, max_xmin_age="50 milliseconds", max_xmin_xids=3)
    assert f"pid {pid} " not in cleared["oldest_xmin_age_s"]["detail"]
    assert f"pid {pid} " not in cleared["oldest_xmin_age_xids"]["detail"]
    # Alone on the server the xid check is off; beside another run (pytest -n) a session of
    # its may hold an xid of its own, which the check then names instead of ours.
    if holders_besides_me(db) == 0:
        assert not cleared["oldest_xmin_age_xids"]["alert"]


def test_reconcile_stamps_its_run_without_waiting_for_a_concurrent_one(db: Conn, connect: Callable[..., Conn]) -> None:
    """A reconcile still open (its stamp row locked) does not hold up another: the second
    skips the stamp instead of waiting. Dry runs do not stamp."""
    db.execute("SELECT jobqueue.reconcile(dry_run => true)")
    assert stamp(db)["last_run_at"] is None
    first = connect(autocommit=False)
    first.execute("SELECT jobqueue.reconcile()")  # stamped, not committed: the row stays locked
    second = connect()
    second.execute("SET statement_timeout = '5s'")
    second.execute("SELECT jobqueue.reconcile()")  # would time out if it waited for the row
    assert stamp(db)["last_run_at"] is None  # first has not committed; second skipped the stamp
    first.commit()
    stamped = stamp(db)["last_run_at"]
    assert stamped is not None
    second.execute("SELECT jobqueue.reconcile()")
    assert stamp(db)["last_run_at"] > stamped


def test_an_expired_lease_waiting_for_reconcile_alerts(db: Conn) -> None:
    db.execute("SELECT jobqueue.reconcile()")
    job = db.execute("SELECT jobqueue.enqueue('t', '{}') AS id").fetchone()["id"]  # type: ignore[index]
    db.execute("SELECT * FROM jobqueue.claim(ARRAY['default'], 'w', 1)")
    assert health(db)["lease_overdue_s"]["value"] == 0
    db.execute("UPDATE jobqueue.job SET lease_expires_at = now() - interval '2 minutes' WHERE id = %s", (job,))
    overdue = health(db)["lease_overdue_s"]
    assert overdue["alert"] is True and 119 < overdue["value"] < 130
    assert overdue["detail"] == "1 expired leases waiting for reconcile"
    expired = health(db, max_expired_leases=0)["expired_leases"]
    assert expired["value"] == 1 and expired["alert"] is True
    assert health(db)["expired_leases"]["alert"] is False  # off by default
    db.execute("SELECT jobqueue.reconcile()")
    assert health(db)["lease_overdue_s"]["alert"] is False


def test_pending_age_and_dead_letter_checks_when_asked_for(db: Conn) -> None:
    job = db.execute("SELECT jobqueue.enqueue('t', '{}', queue => 'slow') AS id").fetchone()["id"]  # type: ignore[index]
    db.execute("UPDATE jobqueue.job SET run_at = now() - interval '10 minutes' WHERE id = %s", (job,))
    off = health(db)
    assert off["oldest_pending_age_s"]["alert"] is False and off["oldest_pending_age_s"]["value"] >= 600
    on = health(db, max_pending_age="1 minute", max_dead_letters=0)
    assert on["oldest_pending_age_s"]["alert"] is True
    assert on["oldest_pending_age_s"]["detail"] == "queue slow"
    assert on["dead_letters"]["alert"] is False
    token = db.execute("SELECT token FROM jobqueue.claim(ARRAY['slow'], 'w', 1)").fetchone()["token"]  # type: ignore[index]
    db.execute("SELECT jobqueue.fail(%s, %s, 'no', 'permanent')", (job, token))
    dead = health(db, max_dead_letters=0)["dead_letters"]
    assert dead["value"] == 1 and dead["alert"] is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_xmin_age", "-1 second"),
        ("max_xmin_age", "0"),
        ("max_xmin_age", "400 days"),
        ("max_xmin_xids", 0),
        ("max_xmin_xids", 3_000_000_000),
        ("max_reconcile_age", "0"),
        ("max_lease_overdue", "-5 seconds"),
        ("max_notify_queue_usage", 0.0),
        ("max_notify_queue_usage", 1.5),
        ("max_pending_age", "0"),
        ("max_dead_letters", -1),
        ("max_expired_leases", -1),
    ],
)
def test_bad_thresholds_are_refused_naming_the_field(db: Conn, field: str, value: Any) -> None:
    before = stamp(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        db.execute(f"SELECT * FROM jobqueue.health({field} => %s)", (value,))
    assert raised.value.diag.column_name == field
    assert (raised.value.diag.message_primary or "").startswith(f"{field}: ")
    assert stamp(db) == before


def test_library_health(db_url: str, db: Conn) -> None:
    with JobQueue(db_url) as jq:
        jq.reconcile()
        rows = jq.health(max_xmin_age=120, max_dead_letters=5)
        assert [r["check_name"] for r in rows] == CHECKS
        by_name = {r["check_name"]: r for r in rows}
        assert by_name["oldest_xmin_age_s"]["threshold"] == 120
        assert by_name["dead_letters"]["threshold"] == 5
        assert not any(r["alert"] for r in rows)
        with pytest.raises(InvalidInput) as raised:
            jq.health(max_notify_queue_usage=2)
        assert raised.value.field == "max_notify_queue_usage"
