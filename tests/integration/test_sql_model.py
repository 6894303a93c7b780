"""MODEL-01: a hypothesis state machine over the SQL API, checked against a Python model.

Rules: enqueue, claim, complete, fail, heartbeat, snooze, release, expire (the owner moves a
lease into the past), make_due (moves run times into the past), reconcile, redrive, cancel.
Every acknowledgement is drawn with the current token or a deliberately stale one. After
every step the invariants of RELIABILITY.md 4.1 are checked against the database:

* each job's state matches the model; terminal states are absorbing;
* a completion is accepted only from the current lease holder, exactly once;
* lease tokens per job strictly increase, across redrive too;
* attempts never exceed max_attempts; at most one valid lease per job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

#: 200 examples x 50 steps in the PR tier; `make nightly` runs MODEL_EXAMPLES=5000 (about
#: 0.2 s per example on 2 cores, so the timeout grows with the count).
EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("MODEL_STEPS", "50"))

pytestmark = pytest.mark.timeout(max(900, EXAMPLES))
NO_DELAY = '{"strategy": "fixed", "initial_delay": 0, "jitter": 0}'


@dataclass
class ModelJob:
    id: int
    max_attempts: int
    state: str = "pending"
    attempt: int = 0
    token: int | None = None  # the current lease token, while processing
    tokens: list[int] = field(default_factory=list)  # every token issued, in order
    completed_with: int | None = None
    cancel_requested: bool = False
    expired: bool = False
    #: token -> what fail() answered for it (a repeated fail answers its first outcome)
    failed_with: dict[int, str] = field(default_factory=dict)


class QueueMachine(RuleBasedStateMachine):
    """One database per run of the machine (cloned from the migrated template)."""

    db_url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg.connect(self.db_url, autocommit=True)
        self.conn.execute("TRUNCATE jobqueue.job, jobqueue.job_history, jobqueue.dead_letter")
        self.jobs: dict[int, ModelJob] = {}

    def teardown(self) -> None:
        self.conn.close()

    def one(self, query: str, params: Any = None) -> Any:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def pick(self, data: st.DataObject, states: tuple[str, ...]) -> ModelJob | None:
        candidates = [j for j in self.jobs.values() if j.state in states]
        return data.draw(st.sampled_from(candidates)) if candidates else None

    def token_for(self, data: st.DataObject, job: ModelJob) -> int:
        """The current token, or a stale/foreign one to test fencing."""
        choices = [t for t in job.tokens if t != job.token] + [job.token or 0, 10**15]
        if job.token is not None and data.draw(st.booleans()):
            return job.token
        return data.draw(st.sampled_from(choices))

    @initialize()
    def start(self) -> None:
        pass

    # -- producers -------------------------------------------------------------------------

    @rule(max_attempts=st.integers(1, 3))
    def enqueue(self, max_attempts: int) -> None:
        job_id = self.one(
            f"SELECT jobqueue.enqueue('m', '{{}}', max_attempts => %s, retry_policy => '{NO_DELAY}')", (max_attempts,)
        )
        self.jobs[job_id] = ModelJob(job_id, max_attempts)

    # -- workers ---------------------------------------------------------------------------

    @rule(n=st.integers(1, 3))
    def claim(self, n: int) -> None:
        claimable = sorted(j.id for j in self.jobs.values() if j.state in ("pending", "retrying"))
        rows = self.conn.execute(
            "SELECT id, token, attempt FROM jobqueue.claim(ARRAY['default'], 'm', %s)", (n,)
        ).fetchall()
        assert len(rows) == min(n, len(claimable))
        for job_id, token, attempt in rows:
            job = self.jobs[job_id]
            assert job.state in ("pending", "retrying"), (job, "claimed while not claimable")
            assert all(token > t for t in job.tokens), "token did not grow"
            job.state, job.token = "processing", token
            job.tokens.append(token)
            job.attempt += 1
            job.cancel_requested = False
            assert attempt == job.attempt

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        job = self.pick(data, ("processing", "completed", "retrying", "dead_letter"))
        if job is None:
            return
        token = (
            self.token_for(data, job)
            if job.state == "processing"
            else data.draw(st.sampled_from([*job.tokens, 10**15]))
        )
        status = self.one("SELECT jobqueue.complete(%s, %s)", (job.id, token))
        if job.state == "processing" and token == job.token:
            assert status == "completed"
            job.state, job.completed_with, job.token, job.expired = "completed", token, None, False
        elif job.state == "completed" and token == job.completed_with:
            assert status == "already_completed"
        else:
            assert status == "lease_lost", (job, token, status)

    @rule(data=st.data(), error_class=st.sampled_from(["transient", "permanent", "system"]))
    def fail(self, data: st.DataObject, error_class: str) -> None:
        job = self.pick(data, ("processing",))
        if job is None:
            return
        token = self.token_for(data, job)
        status = self.one("SELECT jobqueue.fail(%s, %s, 'boom', %s)", (job.id, token, error_class))
        if token != job.token:
            assert status == job.failed_with.get(token, "lease_lost"), (job, token, status)
            return
        budget = job.max_attempts * (2 if error_class == "system" else 1)
        if job.cancel_requested:
            expected = "cancelled"
        elif error_class == "permanent" or job.attempt >= budget:
            expected = "dead_letter"
        else:
            expected = "retrying"
        assert status == expected, (job, error_class, status)
        job.failed_with[token] = expected
        job.state, job.token, job.expired = expected, None, False

    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        job = self.pick(data, ("processing",))
        if job is None:
            return
        token = self.token_for(data, job)
        status = self.one("SELECT status FROM jobqueue.heartbeat(%s, %s, interval '30 seconds')", (job.id, token))
        assert status == ("ok" if token == job.token else "lease_lost")
        if status == "ok":
            # Liveness: an expired lease nobody has taken over yet is renewed, not refused.
            job.expired = False

    @rule(data=st.data())
    def snooze(self, data: st.DataObject) -> None:
        job = self.pick(data, ("processing",))
        if job is None:
            return
        token = self.token_for(data, job)
        status = self.one("SELECT jobqueue.snooze(%s, %s, interval '0 seconds')", (job.id, token))
        if token == job.token and job.cancel_requested:
            assert status == "cancelled"  # a job someone cancelled is not put back
            job.state, job.token, job.expired = "cancelled", None, False
        elif token == job.token:
            assert status == "snoozed"
            job.state, job.token, job.expired = "pending", None, False
            job.attempt -= 1  # a snooze uses no attempt
        else:
            assert status == "lease_lost"

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        job = self.pick(data, ("processing",))
        if job is None:
            return
        token = self.token_for(data, job)
        status = self.one("SELECT jobqueue.release(%s, %s)", (job.id, token))
        if token == job.token and job.cancel_requested:
            assert status == "cancelled"  # a job someone cancelled is not put back
            job.state, job.token, job.expired = "cancelled", None, False
        elif token == job.token:
            assert status == "released"
            job.state, job.token, job.expired = "pending", None, False
            job.attempt -= 1
        else:
            assert status == "lease_lost"

    # -- time and maintenance --------------------------------------------------------------

    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        job = self.pick(data, ("processing",))
        if job is not None:
            self.conn.execute(
                "UPDATE jobqueue.job SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (job.id,)
            )
            job.expired = True

    @rule()
    def make_due(self) -> None:
        self.conn.execute(
            "UPDATE jobqueue.job SET run_at = now() - interval '1 second' WHERE state IN ('pending', 'retrying')"
        )

    @rule()
    def reconcile(self) -> None:
        self.one("SELECT jobqueue.reconcile()")
        for job in self.jobs.values():
            if job.state == "processing" and job.expired:
                if job.cancel_requested:
                    job.state = "cancelled"
                elif job.attempt >= job.max_attempts:
                    job.state = "dead_letter"
                else:
                    job.state = "retrying"
                job.token = None
                job.expired = False

    # -- admin -----------------------------------------------------------------------------

    @precondition(lambda self: any(j.state == "dead_letter" for j in self.jobs.values()))
    @rule(data=st.data())
    def redrive(self, data: st.DataObject) -> None:
        job = self.pick(data, ("dead_letter",))
        assert job is not None
        assert self.one("SELECT jobqueue.retry(%s)", (job.id,)) == job.id
        job.state, job.attempt = "pending", 0

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job = self.pick(data, ("pending", "retrying", "processing", "completed"))
        if job is None:
            return
        status = self.one("SELECT jobqueue.cancel(%s)", (job.id,))
        if job.state in ("pending", "retrying"):
            assert status == "cancelled"
            job.state = "cancelled"
        elif job.state == "processing":
            assert status == "cancel_requested"
            job.cancel_requested = True
        else:
            assert status == "already_finished"

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def states_match_the_model(self) -> None:
        rows = self.conn.execute("SELECT id, state::text, attempt, max_attempts, token FROM jobqueue.jobs").fetchall()
        actual = {row[0]: row for row in rows}
        assert set(actual) == set(self.jobs)
        for job in self.jobs.values():
            _, state, attempt, max_attempts, token = actual[job.id]
            assert state == job.state, (job, state)
            assert attempt == job.attempt, (job, attempt)
            assert attempt <= max_attempts * 2
            if job.state == "processing":
                assert token == job.token
            if job.state == "completed":
                assert token == job.completed_with

    @invariant()
    def one_accepted_completion_per_job_and_tokens_grow(self) -> None:
        rows = self.conn.execute(
            "SELECT job_id, count(*) FILTER (WHERE to_state = 'completed'), "
            "array_agg(token ORDER BY id) FILTER (WHERE to_state = 'processing') "
            "FROM jobqueue.job_event WHERE job_id = ANY(%s) GROUP BY job_id",
            (list(self.jobs),),
        ).fetchall()
        for job_id, completions, claim_tokens in rows:
            assert completions <= 1
            tokens = claim_tokens or []
            assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
            assert tokens == self.jobs[job_id].tokens


def test_queue_state_machine(db_url: str) -> None:
    QueueMachine.db_url = db_url
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
