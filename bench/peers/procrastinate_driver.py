"""Procrastinate under the workloads of `jobqueue bench` (see common.py for the protocol).

Configured as Procrastinate's documentation recommends for throughput: the async
``PsycopgConnector`` (psycopg 3 pool), ``async def`` tasks, several jobs at once per worker
(``concurrency``; "Execute multiple jobs at the same time"), LISTEN/NOTIFY on
(``listen_notify``, the default), finished jobs deleted (``delete_jobs="successful"``, as
"Delete finished jobs" advises, so the jobs table stays small like jobqueue's hot table),
batch enqueue with ``batch_defer_async``, and ``wait=False`` so a worker exits once the
queue is empty. Defaults below were the fastest of a small sweep on the bench machine
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from typing import Any

import common
import procrastinate

#: Worker concurrency (sub-workers). Swept 10, 30, 100 on the 2-core bench machine (5,000
#: jobs, 1 process): 144, 126, 208 jobs/s; see docs/performance.md.
CONCURRENCY = 100
LATENCY_CONCURRENCY = 10

_state: dict[str, Any] = {}


def make_app(url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop", queue="default")
    async def noop(i: int) -> None:
        shared, index = _state.get("shared"), _state.get("index", 0)
        if shared is not None:
            now = time.time()
            if not shared.first[index]:
                shared.first[index] = now
            shared.counts[index] += 1
            shared.last[index] = now

    @app.task(name="latency", queue="default", pass_context=True)
    async def latency(context: procrastinate.JobContext, i: int) -> None:
        started = time.time()
        conn = _state.get("recorder")
        if conn is None:
            import psycopg

            conn = await psycopg.AsyncConnection.connect(_state["url"], autocommit=True)
            await conn.execute("SET synchronous_commit = off")
            _state["recorder"] = conn
        await conn.execute(
            "INSERT INTO bench_latency (job_id, started) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (str(context.job.id), started),
        )

    return app


async def setup(url: str) -> None:
    app = make_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await app.connector.execute_query_async(common.LATENCY_DDL)


async def enqueue_many(args: Any) -> dict[str, Any]:
    app = make_app(args.url)
    task = app.tasks["noop"]
    async with app.open_async():
        started, done = time.monotonic(), 0
        deadline = started + args.max_seconds
        for start, size in common.split_chunks(args.jobs, args.chunk):
            if time.monotonic() > deadline:
                break
            await task.batch_defer_async(*({"i": i} for i in range(start, start + size)))
            done += size
        seconds = time.monotonic() - started
    return {"jobs": done, "seconds": seconds, "partial": done < args.jobs}


async def _produce(index: int, params: dict[str, Any], shared: common.Shared) -> None:
    app = make_app(params["url"])
    task = app.tasks["noop"]
    async with app.open_async():
        await task.defer_async(i=-1)  # connected and warm before the clock starts
        shared.ready.wait(common.START_TIMEOUT_S)
        for i in range(params["start"], params["start"] + params["count"]):
            if shared.stop.is_set():
                return
            await task.defer_async(i=i)
            shared.counts[index] += 1


async def _work(index: int, params: dict[str, Any], shared: common.Shared) -> None:
    _state.update(shared=shared, index=index, url=params["url"])
    app = make_app(params["url"])
    async with app.open_async():
        shared.ready.wait(common.START_TIMEOUT_S)
        worker = asyncio.ensure_future(
            app.run_worker_async(
                queues=["default"],
                concurrency=params["concurrency"],
                wait=False,
                delete_jobs="successful",
                install_signal_handlers=False,
                listen_notify=True,
            )
        )
        watcher = asyncio.ensure_future(common.stop_when(shared, worker.cancel))
        try:
            await worker
        except asyncio.CancelledError:
            pass
        finally:
            watcher.cancel()


async def load(url: str, jobs: int) -> None:
    app = make_app(url)
    task = app.tasks["noop"]
    async with app.open_async():
        for start, size in common.split_chunks(jobs, 10_000):
            await task.batch_defer_async(*({"i": i} for i in range(start, start + size)))


async def _latency_worker(index: int, params: dict[str, Any], shared: common.Shared) -> None:
    _state.update(url=params["url"])
    app = make_app(params["url"])
    async with app.open_async():
        shared.ready.wait(common.START_TIMEOUT_S)
        worker = asyncio.ensure_future(
            app.run_worker_async(
                queues=["default"],
                concurrency=params["concurrency"],
                wait=True,
                delete_jobs="successful",
                install_signal_handlers=False,
                listen_notify=True,
            )
        )
        watcher = asyncio.ensure_future(common.stop_when(shared, worker.cancel))
        try:
            await worker
        except asyncio.CancelledError:
            pass
        finally:
            watcher.cancel()


async def latency(args: Any) -> dict[str, Any]:
    import multiprocessing

    import psycopg

    shared = common.Shared(1)
    mp = multiprocessing.get_context("spawn")
    params = {"url": args.url, "concurrency": args.concurrency or LATENCY_CONCURRENCY}
    proc = mp.Process(target=common._child, args=(_latency_worker, 0, params, shared), daemon=True)
    proc.start()
    shared.ready.wait(common.START_TIMEOUT_S)
    app = make_app(args.url)
    task = app.tasks["latency"]
    count = max(int(args.rate * args.seconds), 1)
    try:
        async with app.open_async(), await psycopg.AsyncConnection.connect(args.url, autocommit=True) as conn:

            async def enqueue(i: int) -> str:
                return str(await task.defer_async(i=i))

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
    result: dict[str, Any] = common.latency_result(sent, started, elapsed, count)
    result["worker_concurrency"] = params["concurrency"]
    return result


async def _wait_recorded(conn: Any, ids: list[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        cur = await conn.execute("SELECT job_id, started FROM bench_latency WHERE job_id = ANY(%s)", (ids,))
        found = {str(r[0]): float(r[1]) for r in await cur.fetchall()}
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
        params = [{"url": args.url, "concurrency": args.concurrency or CONCURRENCY}] * args.processes
        result = common.measure(_work, args.processes, params, args.jobs, args.max_seconds)
        result["concurrency"] = args.concurrency or CONCURRENCY
    else:
        result = common.run_async(latency(args))
    result["peer"] = "procrastinate"
    result["version"] = importlib.metadata.version("procrastinate")
    common.emit(result)


if __name__ == "__main__":
    main()
