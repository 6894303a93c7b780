"""PgQueuer under the workloads of `jobqueue bench` (see common.py for the protocol).

Configured as PgQueuer's documentation recommends for throughput ("Performance Tuning",
"Benchmarks"): the asyncpg driver (about twice psycopg's throughput in their own
benchmark), uvloop (as their benchmark runs), its recommended autovacuum settings
(``pgq autovac``: ``Queries.optimize_autovacuum``), a larger ``batch_size`` for short jobs
with ``max_concurrent_tasks`` unset (unlimited; when set it must be at least twice the
batch), several queue managers per process as their drain benchmark does (``--dequeue``,
one asyncpg connection each), the default durable tables (jobqueue's are durable too), and
``mode=drain`` so a manager exits once the queue is empty. Batch enqueue is
``Queries.enqueue`` with lists. Defaults below were the fastest of a small sweep on the
bench machine (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from typing import Any

import asyncpg
import common
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

#: Jobs per dequeue round trip, and queue managers per process. Swept batch 10/25/100 x
#: managers 1/5 on the 2-core bench machine (20,000 jobs, 1 process): 4.6k-5.8k jobs/s, best
#: at batch 10 x 5 managers, which is also PgQueuer's own benchmark setting; see
#: docs/performance.md.
BATCH_SIZE = 10
MANAGERS = 5
LATENCY_BATCH_SIZE = 10

_state: dict[str, Any] = {}


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**common.asyncpg_kwargs(url))


async def setup(url: str) -> None:
    conn = await connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        await queries.optimize_autovacuum()
        await conn.execute(common.LATENCY_DDL)
    finally:
        await conn.close()


def _payload(i: int) -> bytes:
    return b'{"i": %d}' % i


async def enqueue_many(args: Any) -> dict[str, Any]:
    conn = await connect(args.url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        started, done = time.monotonic(), 0
        deadline = started + args.max_seconds
        for start, size in common.split_chunks(args.jobs, args.chunk):
            if time.monotonic() > deadline:
                break
            await queries.enqueue(["noop"] * size, [_payload(i) for i in range(start, start + size)], [0] * size)
            done += size
        seconds = time.monotonic() - started
    finally:
        await conn.close()
    return {"jobs": done, "seconds": seconds, "partial": done < args.jobs}


async def _produce(index: int, params: dict[str, Any], shared: common.Shared) -> None:
    conn = await connect(params["url"])
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.enqueue("warmup", None, 0)  # connected and warm before the clock starts
        shared.ready.wait(common.START_TIMEOUT_S)
        for i in range(params["start"], params["start"] + params["count"]):
            if shared.stop.is_set():
                return
            await queries.enqueue("noop", _payload(i), 0)
            shared.counts[index] += 1
    finally:
        await conn.close()


def _manager(conn: asyncpg.Connection, shared: common.Shared | None, index: int) -> PgQueuer:
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        if shared is not None:
            now = time.time()
            if not shared.first[index]:
                shared.first[index] = now
            shared.counts[index] += 1
            shared.last[index] = now

    @pgq.entrypoint("latency")
    async def latency(job: Job) -> None:
        started = time.time()
        async with _state.setdefault("lock", asyncio.Lock()):
            if "recorder" not in _state:
                # A small pool: one asyncpg connection runs one query at a time.
                _state["recorder"] = await asyncpg.create_pool(
                    **common.asyncpg_kwargs(_state["url"]),
                    min_size=1,
                    max_size=4,
                    server_settings={"synchronous_commit": "off"},
                )
        await _state["recorder"].execute(common.RECORD_LATENCY, str(job.id), started)

    @pgq.entrypoint("warmup")
    async def warmup(job: Job) -> None:
        pass

    return pgq


async def _work(index: int, params: dict[str, Any], shared: common.Shared) -> None:
    managers = [_manager(await connect(params["url"]), shared, index) for _ in range(params["managers"])]
    shared.ready.wait(common.START_TIMEOUT_S)

    def stop() -> None:
        for pgq in managers:
            pgq.shutdown.set()

    watcher = asyncio.ensure_future(common.stop_when(shared, stop))
    try:
        await asyncio.gather(
            *(pgq.run(batch_size=params["batch_size"], mode=QueueExecutionMode.drain) for pgq in managers)
        )
    finally:
        watcher.cancel()


async def load(url: str, jobs: int) -> None:
    conn = await connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        for start, size in common.split_chunks(jobs, 10_000):
            await queries.enqueue(["noop"] * size, [_payload(i) for i in range(start, start + size)], [0] * size)
    finally:
        await conn.close()


async def _latency_worker(index: int, params: dict[str, Any], shared: common.Shared) -> None:
    _state.update(url=params["url"])
    pgq = _manager(await connect(params["url"]), None, index)
    shared.ready.wait(common.START_TIMEOUT_S)
    watcher = asyncio.ensure_future(common.stop_when(shared, pgq.shutdown.set))
    try:
        await pgq.run(batch_size=params["batch_size"])
    finally:
        watcher.cancel()


async def latency(args: Any) -> dict[str, Any]:
    import multiprocessing

    shared = common.Shared(1)
    mp = multiprocessing.get_context("spawn")
    params = {"url": args.url, "batch_size": args.batch_size or LATENCY_BATCH_SIZE}
    proc = mp.Process(target=common._child, args=(_latency_worker, 0, params, shared), daemon=True)
    proc.start()
    shared.ready.wait(common.START_TIMEOUT_S)
    count = max(int(args.rate * args.seconds), 1)
    producers = [await connect(args.url) for _ in range(common.LATENCY_PRODUCERS)]
    conn = await connect(args.url)
    free: asyncio.Queue[Queries] = asyncio.Queue()
    for producer in producers:
        free.put_nowait(Queries(AsyncpgDriver(producer)))
    try:

        async def enqueue(i: int) -> str:
            queries = await free.get()  # one asyncpg connection runs one query at a time
            try:
                ids = await queries.enqueue("latency", _payload(i), 0)
            finally:
                free.put_nowait(queries)
            return str(ids[0])

        warm = [await enqueue(-i) for i in range(1, 4)]
        await _wait_recorded(conn, warm, common.START_TIMEOUT_S)
        await asyncio.sleep(0.5)
        sent, elapsed = await common.paced(enqueue, args.rate, count, args.max_seconds)
        started = await _wait_recorded(conn, [i for i, _ in sent], common.LATENCY_GRACE_S)
    finally:
        shared.stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        for c in [*producers, conn]:
            await c.close()
    result: dict[str, Any] = common.latency_result(sent, started, elapsed, count)
    result["batch_size"] = params["batch_size"]
    return result


async def _wait_recorded(conn: asyncpg.Connection, ids: list[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await conn.fetch("SELECT job_id, started FROM bench_latency WHERE job_id = ANY($1::text[])", ids)
        found = {str(r["job_id"]): float(r["started"]) for r in rows}
        if len(found) >= len(ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def main() -> None:
    args = common.parse()
    common.run_async(setup(args.url))
    if args.command == "enqueue-many":
        result = common.run_async(enqueue_many(args))
    elif args.command == "enqueue-single":
        shares = [{"url": args.url, "start": s, "count": c} for s, c in common.split(args.jobs, args.processes)]
        result = common.measure(_produce, args.processes, shares, args.jobs, args.max_seconds)
    elif args.command == "drain":
        common.run_async(load(args.url, args.jobs))
        params = {
            "url": args.url,
            "batch_size": args.batch_size or BATCH_SIZE,
            "managers": args.managers or MANAGERS,
        }
        result = common.measure(_work, args.processes, [params] * args.processes, args.jobs, args.max_seconds)
        result.update(batch_size=params["batch_size"], managers=params["managers"])
    else:
        result = common.run_async(latency(args))
    result["peer"] = "pgqueuer"
    result["version"] = importlib.metadata.version("pgqueuer")
    common.emit(result)


if __name__ == "__main__":
    main()
