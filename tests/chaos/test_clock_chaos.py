"""Clock chaos: workers whose clocks are an hour ahead and an hour behind (CHAOS-06).

The workers run the real CLI under time-machine (tests/chaos/skewed.py). Everything that
decides ownership is computed in SQL from the database clock, and local deadlines use the
(skewed, but consistent) monotonic clock, so nothing may change: no lease is reclaimed
early, none is longer than vt from database time, retry times are exactly the policy's.
"""

from __future__ import annotations

import threading

import pytest

from tests.chaos.conftest import Figures
from tests.chaos.harness import (
    Workers,
    check_invariants,
    connect,
    enqueue,
    log_records,
    scalar,
    scaled,
    wait_drained,
)

pytestmark = pytest.mark.timeout(scaled(300, 900))

VT = 2
RETRY_S = 3
SKEWS = {"ahead": 3600, "behind": -3600}


def test_worker_clock_skew(workers: Workers, ledger_db: str, figures: Figures) -> None:
    holds, flakies, hold_s = scaled((4, 4, 4.0), (12, 12, 8.0))
    args = ("-c", "3", "--visibility-timeout", str(VT), "--reconcile-interval", "1", "--poll-interval", "0.5")
    procs = {
        name: workers.start(*args, name=name, launcher=("-m", "tests.chaos.skewed"), env={"CHAOS_SKEW_S": str(skew)})
        for name, skew in SKEWS.items()
    }
    policy = {"strategy": "fixed", "initial_delay": RETRY_S, "jitter": 0}
    ids = enqueue(
        ledger_db,
        [{"type": "chaos.hold", "payload": {"seconds": hold_s}, "retry_policy": policy} for _ in range(holds)]
        + [{"type": "chaos.flaky", "payload": {"fail_times": 1}, "retry_policy": policy} for _ in range(flakies)],
    )
    # Sample the leases while the jobs run: remaining lease time by the database clock.
    remaining: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        with connect(ledger_db) as conn:
            while not stop.is_set():
                for row in conn.execute(
                    "SELECT extract(epoch FROM lease_expires_at - clock_timestamp())::float8 AS left_s "
                    "FROM jobqueue.job WHERE state = 'processing'"
                ):
                    remaining.append(row["left_s"])
                stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_drained(ledger_db, scaled(120, 300))
    finally:
        stop.set()
        sampler.join(10)
    for proc in procs.values():
        assert proc.poll() is None

    with connect(ledger_db) as db:
        expiries = scalar(
            db, "SELECT count(*) FROM jobqueue.job_event WHERE detail->>'by' = 'reconcile' AND job_id = ANY(%s)", (ids,)
        )
        claims_by = {
            row["worker"]: row["n"]
            for row in db.execute(
                "SELECT detail->>'worker_id' AS worker, count(*) AS n FROM jobqueue.job_event "
                "WHERE to_state = 'processing' AND job_id = ANY(%s) GROUP BY 1",
                (ids,),
            )
        }
        # The retry delay fail() chose (from the policy, by the database clock) ...
        retries = [
            float(row["delay"])
            for row in db.execute(
                "SELECT (detail->>'retry_in_s')::float8 AS delay FROM jobqueue.job_event "
                "WHERE to_state = 'retrying' AND job_id = ANY(%s)",
                (ids,),
            )
        ]
        # ... and no second attempt claimed before it (failure time from the job's error entry).
        early_claims = scalar(
            db,
            "SELECT count(*) FROM jobqueue.jobs j CROSS JOIN LATERAL jsonb_array_elements(j.errors) e "
            "JOIN jobqueue.job_event c ON c.job_id = j.id AND c.to_state = 'processing' "
            "AND c.detail->>'attempt' = '2' WHERE j.type = 'chaos.flaky' "
            "AND c.at < (e.value->>'at')::timestamptz + make_interval(secs => %s)",
            (RETRY_S,),
        )
    skews = {
        name: [r["skew_s"] for r in log_records(proc.log_path) if r.get("action") == "clock_skew"]  # type: ignore[attr-defined]
        for name, proc in procs.items()
    }
    f = check_invariants(ledger_db, workers.log_paths())

    assert expiries == 0, f"{expiries} leases were reclaimed although their workers heartbeated them"
    assert f["executions"] == holds + 2 * flakies, f  # each hold once; each flaky twice (fail, then succeed)
    assert set(claims_by) == set(SKEWS), claims_by  # both skewed workers took part
    assert remaining and max(remaining) <= VT + 0.05, f"a lease longer than vt by the database clock: {max(remaining)}"
    assert min(remaining) > -0.5, f"a running job's lease was past due: {min(remaining)}"
    assert retries == [float(RETRY_S)] * flakies, retries
    assert early_claims == 0, "a retry was claimed before its retry time"
    for name, skew in SKEWS.items():
        assert skews[name] and abs(skews[name][0] - skew) < 30, f"{name}: no skew warning ({skews[name]})"
    figures.record(
        "CHAOS-06",
        jobs=f["jobs"],
        faults="clock +1 h, -1 h",
        lost=f["lost"],
        duplicates=f["duplicates"],
        accepted=f["accepted"],
        targets={"no early reclaim": True, "lease <= vt (db time)": True, "retry times exact": True},
        note=f"longest remaining lease seen {max(remaining):.2f} s (vt {VT} s, {len(remaining)} samples); "
        f"retries {RETRY_S} s after failure for all {flakies}; skew warnings {skews}",
    )
