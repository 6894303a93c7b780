"""The chaos harness itself: what a failing run says (issue 12, item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.conftest import FIGURES, Figures, not_met
from tests.chaos.harness import enqueue, record_enqueued, wait_drained, work_jobs


def test_an_undrained_ledger_fails_with_the_invariants_message(ledger_db: str) -> None:
    """A lost or unfinished job is reported as such when the drain times out, not by the
    test's pytest timeout: here one acknowledged id that does not exist and two jobs no
    worker ran."""
    enqueue(ledger_db, work_jobs(2))
    record_enqueued(ledger_db, [10**9])
    with pytest.raises(AssertionError) as failure:
        wait_drained(ledger_db, 1)
    message = str(failure.value)
    assert message.startswith("not drained within 1 s: 1 acknowledged jobs do not exist any more, e.g. [1000000000]")
    assert "2 acknowledged jobs not finished, e.g. [{'id': " in message and "'state': 'pending'" in message


def test_busiest_second_counts_by_the_records_own_timestamps(tmp_path: Path) -> None:
    """CHAOS-09's counter: a sliding 1 s window over the timestamps the worker wrote, lines
    about one job and lines outside [start, end) not counted."""
    from tests.chaos.test_server_chaos import busiest_second

    records = [{"ts": 100.0 + i * 0.05, "action": "db_error"} for i in range(12)]  # 12 in 0.55 s: a tight loop
    records += [{"ts": 100.1, "action": "job_completed", "job_id": 1}] * 5
    records += [{"ts": 105.0 + i, "action": "db_error"} for i in range(3)]  # one a second
    path = tmp_path / "w.log"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    assert busiest_second([path], 0, 200) == 12
    assert busiest_second([path], 100.3, 200) == 6  # the window starts later: 6 of the 12 left
    assert busiest_second([path], 104, 200) == 1


def test_a_target_not_met_fails_the_test(figures: Figures) -> None:
    """A figure table that says NOT MET never comes with a green test (the row is removed
    again here, so that this run's table and exit status are not affected)."""
    try:
        with pytest.raises(pytest.fail.Exception, match=r"HARNESS-CHECK: target NOT MET .*: resume <= 10s"):
            figures.record("HARNESS-CHECK", targets={"0 lost": True, "resume <= 10s": False})
        assert not_met(FIGURES["HARNESS-CHECK"]) == ["resume <= 10s"]
    finally:
        FIGURES.pop("HARNESS-CHECK", None)
    figures.record("HARNESS-CHECK", targets={"0 lost": True})  # all met: no failure
    FIGURES.pop("HARNESS-CHECK")
