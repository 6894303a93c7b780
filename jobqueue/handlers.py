"""Where a worker's claimed jobs run: a pool of threads for plain functions, fed a claimed
batch at a time, and one event loop thread for async ones (started on the first async job).

The worker hands jobs over with :meth:`Handlers.dispatch`; each outcome (a
:class:`~jobqueue.outcome.Success` or the exception the handler raised) goes back through the
``finish`` callback the worker gave. No database work happens here.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

from jobqueue.lease import Running
from jobqueue.models import ClaimedJob
from jobqueue.outcome import NoHandler, Success
from jobqueue.tasks import _current
from jobqueue.tracing import run_span


def _run_span(job: ClaimedJob) -> Any:
    """The tracing span of one run (a no-op without the ``otel`` extra or a tracer provider)."""
    return run_span(job.id, job.queue, job.type, job.attempt, job.metadata)


class Handlers:
    def __init__(self, finish: Callable[[Running, Any], None]) -> None:
        self._finish = finish
        #: Jobs waiting for a handler thread; None tells a thread to exit.
        self._ready: collections.deque[Running | None] = collections.deque()
        self._ready_cv = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def spawn_thread(self) -> None:
        """One more handler thread (at start, one per slot; later, one in place of a thread
        stuck in a handler that timed out)."""
        thread = threading.Thread(target=self._thread_loop, name="jobqueue-handler", daemon=True)
        self._threads.append(thread)
        thread.start()

    def dispatch(self, batch: list[Running]) -> None:
        """Hand claimed jobs to handlers: async ones to the event loop, the others to the
        handler threads as one batch (one wake-up; each thread that takes a job wakes the
        next while some are left)."""
        threaded: list[Running] = []
        for running in batch:
            if running.task is not None and running.task.is_async:
                running.future = asyncio.run_coroutine_threadsafe(self._run_async(running), self._event_loop())
            else:
                threaded.append(running)
        if threaded:
            with self._ready_cv:
                self._ready.extend(threaded)
                self._ready_cv.notify()

    def stop(self) -> None:
        """Tell every handler thread to exit once the jobs before it are taken; stop the loop."""
        with self._ready_cv:
            self._ready.extend([None] * len(self._threads))
            self._ready_cv.notify_all()

    def stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(5)
            if not self._loop.is_running():
                self._loop.close()

    def _thread_loop(self) -> None:
        ready, cv = self._ready, self._ready_cv
        while True:
            with cv:
                while not ready:
                    cv.wait()
                running = ready.popleft()
                if ready:
                    cv.notify()
            if running is None:
                return
            outcome = self._invoke(running)
            self._finish(running, outcome)
            if running.abandoned:
                return  # a replacement thread took this one's place when it was abandoned

    @staticmethod
    def _invoke(running: Running) -> Any:
        token = _current.set(running.ctx)
        try:
            task = running.task
            if task is None:
                raise NoHandler(f"no handler for job type {running.job.type!r} in this worker")
            args, kwargs = task.arguments_from(running.job.payload)
            if task.wants_context:
                args = [running.ctx, *args]
            with _run_span(running.job):
                return Success(task.fn(*args, **kwargs))
        except Exception as exc:
            return exc
        finally:
            _current.reset(token)

    async def _run_async(self, running: Running) -> None:
        token = _current.set(running.ctx)
        outcome: Any
        try:
            task = running.task
            assert task is not None
            args, kwargs = task.arguments_from(running.job.payload)
            if task.wants_context:
                args = [running.ctx, *args]
            with _run_span(running.job):
                outcome = Success(await task.fn(*args, **kwargs))
        except asyncio.CancelledError:
            return  # timed out or shutting down: the keeper or shutdown acknowledged it
        except Exception as exc:
            outcome = exc
        finally:
            _current.reset(token)
        if isinstance(outcome, Success):
            self._finish(running, outcome)  # only queues the acknowledgement: safe on the loop
        else:
            await asyncio.get_running_loop().run_in_executor(None, self._finish, running, outcome)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=loop.run_forever, name="jobqueue-async", daemon=True)
            self._loop_thread.start()
            self._loop = loop
        return self._loop
