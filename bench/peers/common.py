"""What the peer drivers share: arguments, measuring processes, pacing, the JSON answer.

Run only with the peers' own virtual environment (``.bench-peers/venv``, made by
``make bench-peers``); jobqueue is not installed there and nothing here imports it. Each
driver is called by ``jobqueue bench --peers PYTHON`` as::

    PYTHON bench/peers/<peer>_driver.py COMMAND --url URL --max-seconds S [options]

on an empty database of its own on the server under test, and prints one JSON object as its
last line: ``{"jobs": done, "seconds": s, "partial": bool, ...}``. Commands:

enqueue-many    --jobs N --chunk C        the peer's batch enqueue, C jobs per call
enqueue-single  --jobs N --processes P    one enqueue (one transaction) per job, P processes
drain           --jobs N --processes P    N no-op jobs loaded first (not timed), then P
                                          worker processes run until the queue is empty
latency         --rate R --seconds S      an idle worker process; jobs enqueued one by one
                                          at R/s; enqueue commit -> handler start, in ms
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

COMMANDS = ("enqueue-many", "enqueue-single", "drain", "latency")
START_TIMEOUT_S = 60.0
POLL_S = 0.1
#: Producer tasks sharing the paced enqueues of the latency command (as jobqueue's threads).
LATENCY_PRODUCERS = 4
LATENCY_GRACE_S = 10.0
LATENCY_DDL = "CREATE UNLOGGED TABLE IF NOT EXISTS bench_latency (job_id text PRIMARY KEY, started float8 NOT NULL)"
RECORD_LATENCY = "INSERT INTO bench_latency (job_id, started) VALUES ($1, $2) ON CONFLICT DO NOTHING"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    # Peer-specific tuning; each driver documents its defaults.
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--managers", type=int, default=None)
    return parser.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def run_async(coro: Awaitable[Any]) -> Any:
    """uvloop when installed (as PgQueuer's own benchmark runs), else asyncio."""
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


# A copy of jobqueue.bench.processes.split: these drivers run in the peers' own venv, which never installs jobqueue.
def split(total: int, parts: int) -> list[tuple[int, int]]:
    base, extra = divmod(total, parts)
    shares, start = [], 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        shares.append((start, count))
        start += count
    return shares


def split_chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(size, total - start)) for start in range(0, total, size)]


class Shared:
    """What a measuring process shares with the driver: a start barrier, a stop flag, counts."""

    def __init__(self, processes: int) -> None:
        mp = multiprocessing.get_context("spawn")
        self.ready = mp.Barrier(processes + 1)
        self.stop = mp.Event()
        self.counts = mp.RawArray("q", processes)
        self.first = mp.RawArray("d", processes)  # first handler start (drain)
        self.last = mp.RawArray("d", processes)  # last handler end (drain)
        self.ends = mp.RawArray("d", processes)
        self.errors = mp.Queue()


def _child(work: Callable[..., Awaitable[None]], index: int, args: dict[str, Any], shared: Shared) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run_async(work(index, args, shared))
    except BaseException as exc:
        shared.errors.put(f"process {index}: {type(exc).__name__}: {exc}")
        shared.ready.abort()
    finally:
        shared.ends[index] = time.time()


def measure(
    work: Callable[..., Awaitable[None]], processes: int, args: list[dict[str, Any]], planned: int, max_seconds: float
) -> dict[str, Any]:
    """Run ``work`` in ``processes`` spawned processes; the clock starts when all are ready.

    ``work(index, args, shared)`` sets up, calls ``shared.ready.wait()``, works until done or
    ``shared.stop`` is set, and adds what it finished to ``shared.counts[index]``.
    """
    mp = multiprocessing.get_context("spawn")
    shared = Shared(processes)
    procs = [mp.Process(target=_child, args=(work, i, args[i], shared), daemon=True) for i in range(processes)]
    for proc in procs:
        proc.start()
    try:
        shared.ready.wait(START_TIMEOUT_S)
    except threading.BrokenBarrierError:
        shared.stop.set()
        for proc in procs:
            proc.join(30)
        raise SystemExit(_error(shared) or "processes did not start") from None
    t0 = time.time()
    deadline = time.monotonic() + max_seconds
    partial = False
    while any(proc.is_alive() for proc in procs):
        if time.monotonic() > deadline and not shared.stop.is_set():
            shared.stop.set()
            partial = True
        time.sleep(POLL_S)
    error = _error(shared)
    if error:
        raise SystemExit(error)
    done = sum(shared.counts)
    wall = max(max(shared.ends) - t0, 1e-6)
    result: dict[str, Any] = {
        "jobs": done,
        "seconds": wall,
        "partial": partial and done < planned,
        "wall_seconds": wall,
    }
    firsts = [f for f in shared.first if f > 0]
    lasts = [x for x in shared.last if x > 0]
    if firsts and lasts:
        # As jobqueue's drain: from the first job started to the last one finished.
        result["seconds"] = max(max(lasts) - min(firsts), 1e-6)
        result["clock"] = "first handler start to last handler end"
    return result


def _error(shared: Shared) -> str | None:
    try:
        return str(shared.errors.get(timeout=0.05))
    except Exception:
        return None


async def stop_when(shared: Shared, stop: Callable[[], Any]) -> None:
    """Call ``stop()`` once the driver asks the processes to stop (out of time)."""
    while not shared.stop.is_set():
        await asyncio.sleep(POLL_S)
    result = stop()
    if asyncio.iscoroutine(result):
        await result


async def paced(enqueue: Callable[[int], Awaitable[str]], rate: float, count: int, max_seconds: float) -> Any:
    """Enqueue ``count`` jobs at ``rate``/s; [(job id, time.time() right after the commit)]."""
    sent: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    deadline = t0 + max_seconds

    async def producer(k: int) -> None:
        for i in range(k, count, LATENCY_PRODUCERS):
            due = t0 + i / rate
            if due > deadline:
                return
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            job_id = await enqueue(i)
            sent.append((job_id, time.time()))

    await asyncio.gather(*(producer(k) for k in range(LATENCY_PRODUCERS)))
    return sent, max(loop.time() - t0, 1e-6)


def latency_result(sent: list[tuple[str, float]], started: dict[str, float], elapsed: float, count: int) -> Any:
    values = sorted((started[i] - t) * 1000 for i, t in sent if i in started)

    def pct(p: float) -> float | None:
        if not values:
            return None
        index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
        return round(values[index], 2)

    return {
        "jobs": len(sent),
        "seconds": elapsed,
        "partial": len(sent) < count,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(values[-1], 2) if values else None,
        "mean_ms": round(statistics.fmean(values), 2) if values else None,
        "samples": len(values),
        "missing": len(sent) - len(values),
    }


def asyncpg_kwargs(url: str) -> dict[str, Any]:
    """asyncpg.connect() keywords for a libpq URL or key=value string (Unix sockets too)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    out: dict[str, Any] = {}
    for src, dst in (("host", "host"), ("port", "port"), ("user", "user"), ("password", "password")):
        if params.get(src):
            out[dst] = params[src]
    if params.get("dbname"):
        out["database"] = params["dbname"]
    if "port" in out:
        out["port"] = int(out["port"])
    return out
