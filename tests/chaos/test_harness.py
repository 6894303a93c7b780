"""The chaos harness itself: what a failing run says (issue 12, item 8)."""

from __future__ import annotations

import pytest

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
