"""Network chaos: a worker cut off from PostgreSQL by a black-holing TCP proxy (CHAOS-05).

The proxy (tests/support/proxy.py) sits on 127.0.0.1 between one worker and the server;
while it black-holes, every socket stays open and nothing is forwarded (a partition that
TCP cannot see). The handler's side effects go to step_ledger on a direct connection, so
the test sees exactly when the cut-off worker stops taking steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.chaos.conftest import Figures
from tests.chaos.harness import (
    NO_BACKOFF,
    Workers,
    check_invariants,
    connect,
    enqueue,
    log_of,
    log_records,
    scalar,
    scaled,
    wait_drained,
    wait_for,
    work_jobs,
)
from tests.support.proxy import Proxy, proxied

pytestmark = pytest.mark.timeout(scaled(300, 900))


@pytest.fixture
def proxy_url(ledger_db: str) -> Iterator[tuple[Proxy, str]]:
    proxy, url = proxied(ledger_db)
    yield proxy, url
    proxy.close()


def test_partition_longer_than_vt(
    workers: Workers, ledger_db: str, proxy_url: tuple[Proxy, str], figures: Figures
) -> None:
    """CHAOS-05: black-hole one worker for 3 x vt mid-job.

    It must stop starting side effects by its own lease deadline (monotonic, no database
    needed), its late completion must be rejected, another worker completes the job once,
    and the cut-off worker works again within 10 s of the heal.
    """
    proxy, through_proxy = proxy_url
    vt = 3
    partition_s = 3 * vt
    # A serves queues p and a (a: only A, to see it work again); B only p. B does not poll
    # reconcile itself: the test runs reconcile, so the handover is not left to chance.
    a = workers.start(
        "-c", "1", "--queues", "p,a", "--visibility-timeout", str(vt), "--reconcile-interval", "0",
        "--poll-interval", "0.5", name="a", url=through_proxy,
    )  # fmt: skip
    [job] = enqueue(
        ledger_db,
        [{"type": "chaos.steps", "queue": "p", "payload": {"count": 30, "step_s": 0.25}, "retry_policy": NO_BACKOFF}],
    )
    db = connect(ledger_db)
    steps = lambda token: scalar(db, "SELECT count(*) FROM step_ledger WHERE token = %s", (token,))  # noqa: E731
    token_a = wait_for(
        lambda: scalar(db, "SELECT max(token) FROM exec_ledger WHERE job_id = %s", (job,)), 30, "A to claim"
    )
    wait_for(lambda: steps(token_a) >= 2, 30, "A's first side effects")
    proxy.blackhole()
    cut = time.monotonic()
    time.sleep(0.5)  # a heartbeat A sent just before the cut has landed by now, or never will
    lease_a = scalar(
        db, "SELECT lease_expires_at FROM jobqueue.job WHERE id = %s AND token = %s AND state = 'processing'",
        (job, token_a),
    )  # fmt: skip
    assert lease_a is not None, "A lost its lease before the partition"
    b = workers.start(
        "-c", "1", "--queues", "p", "--visibility-timeout", str(vt), "--reconcile-interval", "0",
        "--poll-interval", "0.5", name="b",
    )  # fmt: skip
    wait_for(lambda: scalar(db, "SELECT clock_timestamp() > %s", (lease_a,)), partition_s, "A's lease to run out")
    assert scalar(db, "SELECT jobqueue.reconcile()")["expired_leases"] == 1
    token_b = wait_for(
        lambda: scalar(db, "SELECT max(token) FROM exec_ledger WHERE job_id = %s AND token > %s", (job, token_a)),
        30,
        "B to take the job over",
    )
    time.sleep(max(0.0, partition_s - (time.monotonic() - cut)))
    # Heal: the connections that lived through the partition are dropped (as a NAT or a
    # server-side keepalive would), new ones pass.
    proxy.reset()
    proxy.heal()
    healed = time.monotonic()
    [after] = enqueue(ledger_db, work_jobs(1, queue="a"))
    wait_for(
        lambda: scalar(db, "SELECT count(*) FROM exec_ledger WHERE job_id = %s", (after,)),
        60,
        "A to work again after the heal",
        interval=0.1,
    )
    reconnect_s = time.monotonic() - healed
    wait_drained(ledger_db, 60)
    wait_for(lambda: "ack_rejected" in log_of(a), 30, "A's late completion to be rejected")

    late_steps = scalar(db, "SELECT count(*) FROM step_ledger WHERE token = %s AND at >= %s", (token_a, lease_a))
    a_steps = steps(token_a)
    assert late_steps == 0, f"A took {late_steps} side-effect steps after its lease expired at {lease_a}"
    assert a_steps < 30, "A never stopped"
    fenced = [r for r in log_records(a.log_path) if r.get("action") == "lease_self_fenced"]  # type: ignore[attr-defined]
    assert fenced and fenced[0]["token"] == token_a, "A did not fence itself"
    rejected = [r for r in log_records(a.log_path) if r.get("action") == "ack_rejected"]  # type: ignore[attr-defined]
    assert [(r["job_id"], r["token"]) for r in rejected] == [(job, token_a)]
    assert a.poll() is None and b.poll() is None
    f = check_invariants(ledger_db, workers.log_paths())
    final = scalar(db, "SELECT token FROM jobqueue.jobs WHERE id = %s", (job,))
    assert final == token_b
    db.close()
    figures.record(
        "CHAOS-05",
        jobs=f["jobs"],
        faults=f"partition {partition_s} s",
        lost=f["lost"],
        duplicates=f["duplicates"],
        accepted=f["accepted"],
        recovery_s=round(reconnect_s, 2),
        targets={
            "no side effect past lease": late_steps == 0,
            "late ack rejected": True,
            "back <= 10s": reconnect_s <= 10,  # RELIABILITY CHAOS-05, in both tiers
        },
        note=f"A took {a_steps} steps, none after its lease; recovery = heal to A running a new job",
    )
