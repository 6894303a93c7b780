"""Where the CPU of an overload window went: the worker, the producer and the server's parts.

The overload run (:mod:`jobqueue.bench.overload`) asks why completions swing while the
backlog grows; on a saturated machine the answer is who else took the cores. Every window,
this reads from ``/proc`` the CPU seconds (user + system) of:

worker        the ``jobqueue worker`` processes the bench started
bench         this process (the paced producer, the sampler)
pg_worker     server backends of the worker (``application_name`` jobqueue-bench-worker / -listen)
pg_producer   server backends of the bench's producer and loads
pg_sampler    the server backend of the sampler itself (EXPLAIN, pgstatindex, statistics)
pg_autovacuum autovacuum workers: the running ones, and those that exited in the window
              (their time, reaped by the postmaster, shows in its children's total)
pg_other      every other server process (checkpointer, WAL writer, background writer, ...)

as cores (CPU seconds per second of the window), and the machine's busy cores and the cores
its hypervisor gave other guests while this one wanted them (``/proc/stat``, steal).

And how fast the machine is at each read (:func:`speed_probe`): the CPU time this thread
takes for a fixed piece of pure-Python work. On a shared virtual machine it swings with the
neighbours (caches, memory bandwidth, a sibling hyperthread), and so does every part's CPU
per job. It does not see the cores the hypervisor takes away (steal, recorded beside it),
which on the machine of 2026-12-07 came with every low stretch of a 10-minute overload.
Only for a server on this machine (its backends' pids in ``/proc`` are ``postgres``
processes); elsewhere only the local processes are read. Linux only: elsewhere it reads
nothing and the windows carry no ``cpu``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ACTIVITY = """
SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '')
FROM pg_stat_activity
"""
GROUPS = ("worker", "bench", "pg_worker", "pg_producer", "pg_sampler", "pg_autovacuum", "pg_other")
#: The application_name the overload sampler sets on its connection.
SAMPLER_APP = "jobqueue-bench-sampler"


def proc_times(pid: int) -> tuple[float, float, int, str] | None:
    """(own CPU s, reaped children's CPU s, parent pid, command) of a process, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # the command sits in parentheses and may itself hold spaces or parentheses
    comm = text[text.find("(") + 1 : text.rfind(")")]
    fields = text[text.rfind(")") + 2 :].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    children = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return own, children, int(fields[1]), comm


def machine_busy() -> tuple[float, float, float]:
    """(busy, total, stolen) CPU seconds of the whole machine since boot (all cores); stolen:
    the hypervisor ran other guests while this one had work (in busy and total too)."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    steal = parts[7] if len(parts) > 7 else 0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS, steal / CLOCK_TICKS


#: Iterations of the probe's loop: about 3 ms of CPU on the 2-core machines here (15 ms a
#: window of 5 s: 0.3 % of a core).
PROBE_LOOPS = 20_000
PROBE_RUNS = 5


def speed_probe() -> float:
    """CPU microseconds this thread takes for PROBE_LOOPS iterations of a fixed pure-Python
    loop, the median of PROBE_RUNS runs (``time.thread_time``: time spent waiting for a core
    or for the GIL does not count, a slower core does)."""
    runs = []
    for _ in range(PROBE_RUNS):
        start = time.thread_time_ns()
        fixed_loop()
        runs.append((time.thread_time_ns() - start) / 1000)
    return sorted(runs)[PROBE_RUNS // 2]


def fixed_loop() -> int:
    """PROBE_LOOPS iterations of pure-Python arithmetic: the same work on every call, so the
    CPU time it takes is the core's speed (the probe here, the machine check in bench/machine.py)."""
    acc = 0
    for i in range(PROBE_LOOPS):
        acc ^= i * 7 + (acc >> 3)
    return acc


def _group(backend_type: str, app: str) -> str:
    if backend_type == "autovacuum worker":
        return "pg_autovacuum"
    if backend_type == "client backend":
        if app.startswith(("jobqueue-bench-worker", "jobqueue-listen")):
            return "pg_worker"
        if app == SAMPLER_APP:
            return "pg_sampler"
        if app.startswith("jobqueue-bench"):
            return "pg_producer"
    return "pg_other"


class CpuSampler:
    """Cumulative CPU per group at each :meth:`read`; :meth:`window` gives the cores used between two reads."""

    def __init__(self, worker_pids: Callable[[], Sequence[int]]) -> None:
        self.worker_pids = worker_pids
        self.enabled = os.path.exists("/proc/stat") and os.path.exists(f"/proc/{os.getpid()}/stat")

    def read(self, conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        pids: dict[int, tuple[str, float]] = {}
        postmaster: int | None = None
        try:
            rows = conn.execute(ACTIVITY).fetchall()
        except psycopg.Error:
            rows = []
        for pid, backend_type, app in rows:
            t = proc_times(int(pid))
            if t is None or t[3] != "postgres":
                continue  # gone, or a server on another machine
            pids[int(pid)] = (_group(str(backend_type), str(app)), t[0])
            postmaster = t[2]
        reaped = 0.0
        if postmaster is not None:
            p = proc_times(postmaster)
            if p is not None:
                # the postmaster's own time counts with the other server processes
                pids[postmaster] = ("pg_other", p[0])
                reaped = p[1]
        for pid in self.worker_pids():
            t = proc_times(pid)
            if t is not None:
                pids[pid] = ("worker", t[0] + t[1])
        me = proc_times(os.getpid())
        if me is not None:
            pids[os.getpid()] = ("bench", me[0])
        busy, total, steal = machine_busy()
        return {"pids": pids, "reaped": reaped, "busy": busy, "total": total, "steal": steal, "probe": speed_probe()}

    @staticmethod
    def window(prev: dict[str, Any] | None, cur: dict[str, Any] | None, seconds: float) -> dict[str, float] | None:
        """Cores used per group between two reads (CPU seconds / wall seconds)."""
        if prev is None or cur is None or seconds <= 0:
            return None
        used = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, cpu) in cur["pids"].items():
            before = prev["pids"].get(pid)
            used[group] += cpu - (before[1] if before is not None and before[0] == group else 0.0)
        # processes that exited in the window: the postmaster reaped them, and its children's
        # total grew by their whole life; what the last read already counted is taken off
        gone = sum(cpu for pid, (group, cpu) in prev["pids"].items() if pid not in cur["pids"] and group != "worker")
        reaped = max(cur["reaped"] - prev["reaped"] - gone, 0.0)
        # exited server processes of a loaded server are mostly autovacuum workers (client
        # backends of the run live as long as it does)
        used["pg_autovacuum"] += reaped
        out = {k: round(max(v, 0.0) / seconds, 3) for k, v in used.items()}
        out["machine_busy"] = round((cur["busy"] - prev["busy"]) / seconds, 3)
        out["machine_cores"] = round((cur["total"] - prev["total"]) / seconds, 3)
        out["machine_steal"] = round((cur.get("steal", 0.0) - prev.get("steal", 0.0)) / seconds, 3)
        out["probe_us"] = round(cur.get("probe", 0.0), 1)
        return out


def plot_cpu(ax: Any, windows: Sequence[dict[str, Any]]) -> None:
    """Stacked cores per group over time on a matplotlib axis (windows without ``cpu`` are gaps)."""
    rows = [w for w in windows if w.get("cpu")]
    if not rows:
        return
    t = [w["t"] for w in rows]
    ax.stackplot(t, *[[w["cpu"].get(g, 0.0) for w in rows] for g in GROUPS], labels=GROUPS, alpha=0.8)
    ax.plot(t, [w["cpu"].get("machine_busy", 0.0) for w in rows], color="black", lw=0.8, label="machine busy")
    stolen = [w["cpu"].get("machine_steal", 0.0) for w in rows]
    ax.plot(t, stolen, color="black", ls="--", lw=0.9, label="stolen (hypervisor)")
    ax.set_ylabel("cores")
    ax.set_ylim(bottom=0, top=max([w["cpu"].get("machine_cores", 2.0) for w in rows] + [1.0]) * 1.05)
    ax.legend(loc="upper left", fontsize=7, ncol=4)
