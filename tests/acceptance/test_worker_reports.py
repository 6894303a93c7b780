"""What a real `jobqueue worker` process says while it runs (issue 14 items 4 and 5).

* a DEBUG line per job (its outcome and run time) and, every --report-interval, an INFO
  summary of the jobs done, failed (dead-lettered) and retried since the last one;
* a WARNING, once per type, when jobs of a type that no running worker handles are
  pending on its queues.

The worker's stderr is read line by line on a thread; the test waits for the lines it
expects (events), never for a length of time.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(180)

#: How long a line the test expects may take to come (a ceiling for a loaded machine).
LINE_DEADLINE_S = 60.0
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields(line: str) -> dict[str, str]:
    """``2026-...Z INFO action=worker_summary done=2 ...`` -> {"level": "INFO", "action": ..., "done": "2"}."""
    parts = line.split(" ", 2)
    found = {k: (json.loads(v) if v.startswith('"') else v) for k, v in _FIELD.findall(line)}
    return {"level": parts[1] if len(parts) > 1 else "", **found, "_line": line}


class Lines:
    """A process's stderr, read on a thread; ``wait(predicate)`` returns the first matching line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.all: list[dict[str, str]] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait(self, predicate: Callable[[dict[str, str]], bool], what: str) -> dict[str, str]:
        deadline = time.monotonic() + LINE_DEADLINE_S
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {what} within {LINE_DEADLINE_S:g}s; got: {self.all[-20:]}") from None
            if line is None:
                raise AssertionError(f"the worker exited ({self.proc.wait()}) before {what}; got: {self.all[-20:]}")
            parsed = fields(line)
            self.all.append(parsed)
            if predicate(parsed):
                return parsed


def enqueue(db: psycopg.Connection[Any], type: str, payload: dict[str, Any], queue: str) -> int:
    row = db.execute(
        "SELECT jobqueue.enqueue(%s, %s::jsonb, queue => %s) AS id", (type, json.dumps(payload), queue)
    ).fetchone()
    assert row is not None
    return int(row["id"])


@pytest.fixture
def worker(db_url: str) -> Iterator[Callable[..., Lines]]:
    procs: list[subprocess.Popen[str]] = []
    readers: list[Lines] = []

    def start(*extra: str) -> Lines:
        command = [sys.executable, "-m", "jobqueue", "--database-url", db_url, "worker"]
        command += ["--app", "jobqueue.examples:jq", "--poll-interval", "0.1", "--reconcile-interval", "1", *extra]
        proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        readers.append(Lines(proc))
        return readers[-1]

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for lines in readers:
        lines.reader.join(timeout=30)
        assert lines.proc.stderr is not None
        lines.proc.stderr.close()


def is_summary(line: dict[str, str]) -> bool:
    return line.get("action") == "worker_summary"


def test_worker_logs_each_job_at_debug_and_a_summary_at_info(
    worker: Callable[..., Lines], db: psycopg.Connection[Any]
) -> None:
    lines = worker("-q", "sumq", "--report-interval", "0.3", "--log-level", "DEBUG")
    lines.wait(lambda f: f.get("action") == "worker_started", "worker_started")
    done = enqueue(db, "examples.resize_image", {"image": "a.png", "work_ms": 1}, "sumq")
    retried = enqueue(db, "examples.flaky_api", {"endpoint": "/x", "fail_attempts": 1}, "sumq")
    failed = enqueue(
        db, "examples.charge_card", {"order_id": "o", "card": "4000000000000002", "amount_cents": 5}, "sumq"
    )
    totals = {"done": 0, "failed": 0, "retried": 0}
    while totals != {"done": 2, "failed": 1, "retried": 1}:
        summary = lines.wait(is_summary, f"summaries adding up to 2 done, 1 failed, 1 retried (so far {totals})")
        assert summary["level"] == "INFO"
        for key in totals:
            totals[key] += int(summary[key])
        assert all(totals[k] <= n for k, n in {"done": 2, "failed": 1, "retried": 1}.items()), totals
    assert "interval_s" in summary and "running" in summary and summary["worker_id"]
    per_job = {(f["action"], f.get("job_id")): f for f in lines.all if f["level"] == "DEBUG"}
    for action, job_id in [
        ("job_completed", done),
        ("job_retrying", retried),
        ("job_completed", retried),
        ("job_dead_letter", failed),
    ]:
        line = per_job.get((action, str(job_id)))
        assert line is not None, (action, job_id, sorted(per_job))
        assert float(line["duration_s"]) >= 0 and line["queue"] == "sumq" and line["job_type"].startswith("examples.")
    assert not any(f["level"] == "INFO" and f.get("job_id") for f in lines.all)  # per-job lines are DEBUG only


def test_worker_warns_once_per_type_that_no_running_worker_handles(
    worker: Callable[..., Lines], db: psycopg.Connection[Any]
) -> None:
    """Jobs whose type no running worker handles used to wait silently for ever."""
    # A type that another (healthy) worker on the queue handles is not reported.
    db.execute(
        "SELECT jobqueue.register_worker('elsewhere:1', 'h', 1, ARRAY['unq'], 1, %s::jsonb)",
        (json.dumps({"types": ["handled.elsewhere"]}),),
    )
    enqueue(db, "handled.elsewhere", {}, "unq")
    enqueue(db, "nobody.handles", {}, "unq")
    enqueue(db, "nobody.handles", {}, "unq")
    lines = worker("-q", "unq,other", "--report-interval", "0.3")
    first = lines.wait(lambda f: f.get("action") == "unhandled_job_type", "an unhandled_job_type warning")
    assert first["level"] == "WARNING"
    assert (first["job_type"], first["queue"], first["pending"]) == ("nobody.handles", "unq", "2")
    assert "no running worker handles that type" in first["_line"]
    enqueue(db, "nobody.handles", {}, "other")  # same type, another queue: not reported again
    enqueue(db, "also.lost", {}, "other")
    second = lines.wait(lambda f: f.get("action") == "unhandled_job_type", "a second unhandled_job_type warning")
    assert (second["job_type"], second["queue"]) == ("also.lost", "other")
    # Several more reports (each one checks again): still one warning per type, none for
    # the type a healthy worker elsewhere handles.
    for n in range(3):
        lines.wait(is_summary, f"summary {n + 1} after the second warning")
    warned = [f["job_type"] for f in lines.all if f.get("action") == "unhandled_job_type"]
    assert warned == ["nobody.handles", "also.lost"]
