"""Worker subprocesses and the end-of-test invariants (RELIABILITY.md section 4.2)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.chaos_app:jq"

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS exec_ledger (
    job_id bigint NOT NULL,
    token bigint NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


@dataclass
class Workers:
    """Starts `jobqueue worker` processes against one database; kills them all at the end."""

    url: str
    log_dir: Path
    #: The --app the workers load (the soak and OPS tests use tests.support.soak_app:jq).
    app: str = APP
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    started: int = 0

    def start(self, *args: str, name: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        self.started += 1
        name = name or f"w{self.started}"
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed by kill_all
        self.logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobqueue",
                "--database-url",
                self.url,
                "worker",
                "--app",
                self.app,
                "--name",
                name,
                *args,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "LEDGER_URL": self.url, "PGAPPNAME": f"jq-worker-{name}", **(env or {})},
        )
        proc.log_path = self.log_dir / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for log in self.logs:
            log.close()


def log_of(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def scalar(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def state_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT state::text AS state, count(*) AS n FROM jobqueue.jobs GROUP BY 1").fetchall()
    return {row["state"]: int(row["n"]) for row in rows}


def check_invariants(url: str, enqueued: list[int], *, kills: int = 0, slots_per_kill: int = 0) -> dict[str, int]:
    """The end-of-test invariant query: nothing lost, one accepted completion per job, fenced."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        counts = state_counts(conn)
        assert counts.get("processing", 0) == 0, counts
        completed = {
            row["id"]: row["token"]
            for row in conn.execute("SELECT id, token FROM jobqueue.jobs WHERE state = 'completed'")
        }
        missing = [i for i in enqueued if i not in completed]
        assert not missing, f"{len(missing)} enqueued jobs not completed, e.g. {missing[:5]}: {counts}"
        accepted = conn.execute(
            "SELECT job_id, count(*) AS n, max(token) AS token FROM jobqueue.job_event "
            "WHERE to_state = 'completed' GROUP BY job_id"
        ).fetchall()
        by_job = {row["job_id"]: row for row in accepted}
        doubles = [j for j, row in by_job.items() if row["n"] != 1]
        assert not doubles, f"jobs with more than one accepted completion: {doubles[:5]}"
        wrong_token = [j for j in enqueued if by_job[j]["token"] != completed[j]]
        assert not wrong_token, f"accepted completion token differs from the final token: {wrong_token[:5]}"
        over = scalar(conn, "SELECT count(*) FROM jobqueue.jobs WHERE attempt > max_attempts")
        assert over == 0
        executions = scalar(conn, "SELECT count(*) FROM exec_ledger")
        duplicates = executions - len(enqueued)
        assert duplicates >= 0
        if kills:
            assert duplicates <= kills * slots_per_kill, (duplicates, kills, slots_per_kill)
        return {
            "jobs": len(enqueued),
            "executions": executions,
            "duplicates": duplicates,
            "accepted": sum(row["n"] for row in accepted),
        }
