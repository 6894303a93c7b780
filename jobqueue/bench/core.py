r"""The bench itself: its progress, its rows, and the measurements scenarios share.

Scenarios (:mod:`~jobqueue.bench.throughput`, :mod:`~jobqueue.bench.latency`,
:mod:`~jobqueue.bench.history`, :mod:`~jobqueue.bench.cost`) are functions of a
:class:`Bench`: they call its loaders and measurements here and record :class:`Row`\ s.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from jobqueue.bench.config import (
    BULK_CHUNK,
    CLAIM_BATCH,
    PROGRESS_POLL_S,
    RATIO_TARGETS,
    START_TIMEOUT_S,
    WORKER_STOP_TIMEOUT_S,
    BenchConfig,
    BenchError,
    Measured,
    Row,
)
from jobqueue.bench.processes import Workers, _child_main, _mp, first_error
from jobqueue.bench.scratch import Scratch, scratch_name
from jobqueue.bench.statements import BASELINE_COPY, DRAINED, LIVE_JOBS, NOOP_TYPE, QUEUE
from jobqueue.config import DatabaseTarget


class Bench:
    def __init__(self, target: DatabaseTarget, config: BenchConfig, progress: Any) -> None:
        self.target = target
        self.config = config
        self.scratch = Scratch(target.url, scratch_name(target.url, config.scratch_db))
        self.progress = progress
        self.rows: list[Row] = []
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._task: Any = None

    # -- progress -----------------------------------------------------------------------

    def begin(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
        self._task = self.progress.add_task(description, total=total, rate="")

    def advance(self, completed: int, started: float | None = None) -> None:
        if self._task is None:
            return
        rate = ""
        if started is not None and completed:
            elapsed = time.monotonic() - started
            rate = f"{completed / elapsed:,.0f}/s" if elapsed > 0 else ""
        self.progress.update(self._task, completed=completed, rate=rate)

    def end(self) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None

    # -- helpers ------------------------------------------------------------------------

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, key: str) -> Row | None:
        for row in self.rows:
            if row.key == key and row.system in ("jobqueue", "baseline"):
                return row
        return None

    def record(
        self, scenario: str, key: str, label: str, system: str, processes: int, planned: int, m: Measured
    ) -> Row:
        # The machine may be shared: keep its load with every figure.
        m.extra.setdefault("loadavg_1m", round(os.getloadavg()[0], 2))
        return self.add(
            Row(
                scenario=scenario,
                key=key,
                label=label,
                system=system,
                processes=processes,
                jobs=m.jobs,
                planned=planned,
                seconds=round(m.seconds, 4),
                rate=round(m.rate, 1),
                partial=m.partial,
                extra=m.extra,
            )
        )

    def compare(self, row: Row, baseline_key: str) -> None:
        base = self.row(baseline_key)
        row.baseline = baseline_key
        if base is not None and base.rate > 0:
            row.ratio = round(row.rate / base.rate, 3)
        target = RATIO_TARGETS.get(row.key)
        if target is not None:
            row.target = f">= {target:.0%}"
            row.met = row.ratio is not None and row.ratio >= target

    def run_processes(
        self, kind: str, processes: int, planned: int, deadline: float, params: Sequence[dict[str, Any]]
    ) -> Measured:
        """Run ``processes`` processes of ``kind``; the clock starts once all are connected."""
        mp = _mp()
        ready = mp.Barrier(processes + 1)
        stop = mp.Event()
        counts = mp.RawArray("q", processes)
        ends = mp.RawArray("d", processes)
        errors = mp.Queue()
        procs = [
            mp.Process(
                target=_child_main,
                args=(kind, self.scratch.url, i, dict(params[i]), ready, stop, counts, ends, errors),
                daemon=True,
            )
            for i in range(processes)
        ]
        for proc in procs:
            proc.start()
        try:
            ready.wait(START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            stop.set()
            for proc in procs:
                proc.join(WORKER_STOP_TIMEOUT_S)
            raise BenchError(first_error(errors) or f"{kind} processes did not start") from None
        started, t0 = time.monotonic(), time.time()
        partial = False
        while any(proc.is_alive() for proc in procs):
            self.advance(sum(counts), started)
            if time.monotonic() > deadline and not stop.is_set():
                stop.set()
                partial = True
            if procs[0].is_alive():
                procs[0].join(PROGRESS_POLL_S)
            else:
                time.sleep(PROGRESS_POLL_S / 5)
        for proc in procs:
            proc.join()
        error = first_error(errors)
        if error:
            raise BenchError(error)
        done = sum(counts)
        self.advance(done, started)
        seconds = max(max(ends) - t0, 1e-6)
        return Measured(done, seconds, partial and done < planned)

    def load_jobs(self, count: int, label: str = "loading jobs") -> None:
        """N no-op jobs into jobqueue, through enqueue_many (setup, not timed)."""
        from jobqueue.client import JobQueue

        self.begin(label, count)
        with JobQueue(self.scratch.url, pool_size=1, application_name="jobqueue-bench") as jq:
            done = 0
            for start, size in chunks(count, BULK_CHUNK):
                jq.enqueue_many(noop_jobs(start, size))
                done += size
                self.advance(done)

    def load_baseline(self, count: int) -> None:
        self.begin("loading baseline rows", count)
        with self.scratch.connect() as conn:
            done = 0
            for start, size in chunks(count, BULK_CHUNK):
                copy_rows(conn, start, size)
                done += size
                self.advance(done)

    def vacuum(self, *tables: str) -> None:
        with self.scratch.connect() as conn:
            for table in tables:
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.SQL(table)))

    def copy(self, n: int, deadline: float) -> Measured:
        started, done = time.monotonic(), 0
        with self.scratch.connect() as conn:
            for start, size in chunks(n, BULK_CHUNK):
                if time.monotonic() > deadline:
                    break
                copy_rows(conn, start, size)
                done += size
                self.advance(done, started)
        return Measured(done, time.monotonic() - started, done < n)

    def truncate_baseline(self) -> None:
        with self.scratch.connect() as conn:
            conn.execute("TRUNCATE bench.job RESTART IDENTITY")

    def claim_delete(
        self, form: str, procs: int, n: int, deadline: float, key: str, scenario: str = "baseline"
    ) -> None:
        self.truncate_baseline()
        self.load_baseline(n)
        self.vacuum("bench.job")
        what = "CTE" if form == "cte" else "ANY(ARRAY)"
        self.begin(f"{scenario}: claim {CLAIM_BATCH} ({what}) + delete x{procs}", n)
        m = self.run_processes("claim", procs, n, deadline, [{"form": form}] * procs)
        label = f"claim {CLAIM_BATCH} SKIP LOCKED {what} + delete"
        self.record(scenario, key, label, "baseline", procs, n, m)

    def worker_command(self, concurrency: int, burst: bool) -> list[str]:
        command = [sys.executable, "-m", "jobqueue", "--database-url", self.scratch.url, "worker"]
        command += ["--app", "jobqueue.bench.app:jq", "-c", str(concurrency), "--log-level", "WARNING"]
        return command + (["--burst"] if burst else [])

    def spawn_workers(self, count: int, concurrency: int, burst: bool) -> Workers:
        return Workers([self.worker_command(concurrency, burst)] * count)

    def drain_burst(
        self, procs: int, concurrency: int, n: int, deadline: float, label: str, setup: Any = None
    ) -> Measured:
        """Load N jobs, run ``procs`` burst workers until the queue is empty (or the deadline)."""
        self.scratch.reset()
        if setup is not None:
            setup()
        self.load_jobs(n)
        self.vacuum("jobqueue.job")
        self.begin(label, n)
        started, t0 = time.monotonic(), time.time()
        workers = self.spawn_workers(procs, concurrency, burst=True)
        partial = False
        with self.scratch.connect() as conn:
            while workers.alive():
                left = int(conn.execute(LIVE_JOBS).fetchone()[0])  # type: ignore[index]
                self.advance(n - left, started)
                if time.monotonic() > deadline and not partial:
                    partial = True
                    workers.terminate()
                time.sleep(PROGRESS_POLL_S * 2)
            wall = time.time() - t0
            workers.stop(graceful=False)
            row = conn.execute(DRAINED).fetchone()
        assert row is not None
        done, db_seconds = int(row[0]), row[1]
        self.advance(done, started)
        seconds = float(db_seconds) if db_seconds and db_seconds > 0 else wall
        return Measured(
            done,
            seconds,
            partial and done < n,
            extra={
                "concurrency": concurrency,
                "wall_seconds": round(wall, 3),
                "wall_rate": round(done / wall, 1) if wall > 0 else None,
                "clock": "first claimed_at to last finished_at (database clock)",
            },
        )


def noop_jobs(start: int, count: int) -> list[dict[str, Any]]:
    return [{"type": NOOP_TYPE, "payload": {"i": i}, "queue": QUEUE} for i in range(start, start + count)]


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)


def copy_rows(conn: psycopg.Connection[Any], start: int, size: int) -> None:
    with conn.transaction(), conn.cursor().copy(BASELINE_COPY) as copy:
        for i in range(start, start + size):
            copy.write_row((NOOP_TYPE, json.dumps({"i": i})))
