"""Measuring in several processes: forked producers and claimers, and real workers.

Processes, never threads, stand for "processes" (the GIL). The measuring processes come
from a forkserver; the workers are real ``jobqueue worker`` processes running
:mod:`jobqueue.bench.app`.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from jobqueue.bench.config import CLAIM_BATCH, START_TIMEOUT_S, WORKER_STOP_TIMEOUT_S, BenchError
from jobqueue.bench.statements import BASELINE_INSERT, CLAIM_SQL, NOOP_TYPE, QUEUE

# -- measuring in several processes ----------------------------------------------------------


def _child_insert(url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any) -> None:
    start, count = params["start"], params["count"]
    with psycopg.connect(url, autocommit=True, application_name="jobqueue-bench-baseline") as conn:
        cur = conn.cursor()
        ready.wait(START_TIMEOUT_S)
        for i in range(start, start + count):
            if stop.is_set():
                return
            cur.execute(BASELINE_INSERT, (NOOP_TYPE, json.dumps({"i": i})), prepare=True)
            counts[index] += 1


def _child_claim(url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any) -> None:
    claim = CLAIM_SQL[params["form"]]
    with psycopg.connect(url, autocommit=True, application_name="jobqueue-bench-baseline") as conn:
        cur = conn.cursor()
        ready.wait(START_TIMEOUT_S)
        while not stop.is_set():
            rows = cur.execute(claim, (CLAIM_BATCH,), prepare=True).fetchall()
            if not rows:
                return
            counts[index] += len(rows)


def _child_enqueue(url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any) -> None:
    from jobqueue.client import JobQueue

    start, count = params["start"], params["count"]
    with JobQueue(url, pool_size=1, application_name="jobqueue-bench-producer") as jq:
        jq.check_schema()  # connected before the clock starts
        ready.wait(START_TIMEOUT_S)
        for i in range(start, start + count):
            if stop.is_set():
                return
            jq.enqueue(NOOP_TYPE, {"i": i}, queue=QUEUE)
            counts[index] += 1


def _child_http_post(url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any) -> None:
    """POST /api/v1/jobs, one job per request, over one kept-alive connection (the web scenario).

    The request is written to the socket and the response read off it by hand, as load
    generators such as wrk do: ``http.client`` spends about 180 us of CPU per request (its
    header objects and email parser), which on a 2-core machine the server under test would
    lose. Every response is still read whole and its status checked.
    """
    import socket

    start, count = params["start"], params["count"]
    head = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: {params['host']}:{params['port']}\r\n"
        f"Authorization: Bearer {params['token']}\r\nContent-Type: application/json\r\nContent-Length: "
    ).encode()
    sock = socket.create_connection((params["host"], params["port"]), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    try:
        auth = f"Authorization: Bearer {params['token']}\r\n"
        sock.sendall(f"GET /api/v1/whoami HTTP/1.1\r\nHost: {params['host']}\r\n{auth}\r\n".encode())
        _read_response(reader)  # connected before the clock starts
        ready.wait(START_TIMEOUT_S)
        for i in range(start, start + count):
            if stop.is_set():
                return
            body = json.dumps({"type": NOOP_TYPE, "payload": {"i": i}, "queue": QUEUE}).encode()
            sock.sendall(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status, answer = _read_response(reader)
            if status != 201:
                raise BenchError(f"POST /api/v1/jobs answered {status}: {answer[:300]!r}")
            counts[index] += 1
    finally:
        reader.close()
        sock.close()


def _read_response(reader: Any) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length off a kept-alive connection: (status, body)."""
    status_line = reader.readline(65536)
    if not status_line.startswith(b"HTTP/1.1 "):
        raise BenchError(f"not an HTTP/1.1 response: {status_line[:100]!r}")
    length = None
    while (line := reader.readline(65536)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise BenchError("a response without Content-Length (the bench's client reads no chunked bodies)")
    return int(status_line[9:12]), reader.read(length)


CHILDREN: dict[str, Callable[[str, int, dict[str, Any], Any, Any, Any], None]] = {
    "insert": _child_insert,
    "claim": _child_claim,
    "enqueue": _child_enqueue,
    "http_post": _child_http_post,
}


def _child_main(
    kind: str, url: str, index: int, params: dict[str, Any], ready: Any, stop: Any, counts: Any, ends: Any, errors: Any
) -> None:
    """Entry point of a measuring process (forked from the forkserver: nothing of the parent's state)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        CHILDREN[kind](url, index, params, ready, stop, counts)
    except BaseException as exc:
        errors.put(f"{kind} process {index}: {type(exc).__name__}: {exc}")
        ready.abort()
    finally:
        ends[index] = time.time()


def _mp() -> Any:
    """Processes forked from a fresh server process that has psycopg and jobqueue imported.

    Not ``fork`` (the bench has threads: progress bar, pools) and not ``spawn`` (every
    process would import everything again: about a second each on a busy 2-core machine).
    """
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["jobqueue.bench.processes", "jobqueue.client"])
    return mp


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """(start, count) for each of ``parts`` shares of ``total``, as even as can be."""
    base, extra = divmod(total, parts)
    shares, start = [], 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        shares.append((start, count))
        start += count
    return shares


class Workers:
    """Real ``jobqueue worker`` processes, each logging to a temporary file (shown on failure)."""

    def __init__(self, commands: Sequence[list[str]]) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], Any]] = []
        self.stopped = False
        for command in commands:
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.procs.append((proc, log))

    def alive(self) -> bool:
        return any(proc.poll() is None for proc, _ in self.procs)

    def exited(self) -> bool:
        return any(proc.poll() is not None for proc, _ in self.procs)

    def terminate(self) -> None:
        """SIGTERM: the worker stops claiming, finishes what it holds, and exits."""
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def stop(self, graceful: bool = True) -> None:
        """Wait for every worker to exit (SIGTERM first when graceful); raise if one failed."""
        if self.stopped:
            return
        self.stopped = True
        if graceful:
            self.terminate()
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        for proc, _ in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        failure = None
        for proc, log in self.procs:
            if failure is None and proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                failure = f"worker exited with {proc.returncode}: {' | '.join(line.strip() for line in tail)}"
            log.close()
        if failure is not None:
            raise BenchError(failure)


def first_error(errors: Any) -> str | None:
    """The first error a measuring process reported (they are flushed before it exits)."""
    try:
        return str(errors.get(timeout=0.05))
    except Exception:
        return None
