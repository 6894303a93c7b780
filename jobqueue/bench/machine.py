"""The machine check: how steady this machine's own speed is, with nothing of jobqueue running.

The overload verdict (bench/overload_verdict.py) asks completions to stay within 10 % of
their peak over 30 s spans. A machine that itself runs 15 % slower in some 30 s spans than
in others cannot show that for any program, however flat the program is. This check tells
which machine this is, in two parts of ``--machine-seconds`` each, counted per span of
``SPAN_S``:

compute      one process per core, pinned to it, runs the speed probe's fixed loop
             (bench/cpu.py) back to back: loops per CPU second. CPU time, not wall time:
             time the core was taken by another process does not count, a core that runs
             slower does (a busy neighbour on the same host, a lower clock).
round trips  two processes pinned to two cores pass one byte back and forth through pipes:
             round trips per second of wall time, the shape of a worker waiting on its
             database and the database waiting on the worker. Each trip wakes a sleeping
             process on the other core; on a virtual machine that goes through the
             hypervisor, whose speed moves with the host's load.

The cores stolen by the hypervisor and the cores other processes used meanwhile (/proc/stat)
are printed beside it: a machine that was not idle shows there. Only with ``--only machine``
(registered on demand); it needs no database.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from jobqueue.bench.config import BenchError, Measured
from jobqueue.bench.core import Bench
from jobqueue.bench.cpu import PROBE_LOOPS, fixed_loop, machine_busy
from jobqueue.bench.overload_verdict import FLOOR, SMOOTH
from jobqueue.bench.registry import scenario, table

#: The span the overload verdict averages over (SMOOTH windows of the overload's 5 s).
SPAN_S = SMOOTH * 5.0
#: Length of each of the check's two parts: six spans.
MACHINE_S = 180.0
QUICK_MACHINE_S = 2.0
QUICK_SPAN_S = 0.5
#: Time the spawned processes get to start (and warm their core) before the first span, so
#: that the spans of all cores line up.
START_S = 3.0


def spin(core: int | None, start_at: float, span_s: float, spans: int) -> list[tuple[int, float, float]]:
    """In a process of its own: pinned to ``core`` (None: where the system puts it), from the
    monotonic time ``start_at`` run the fixed loop for ``spans`` spans of ``span_s`` seconds;
    per span (loops, CPU seconds, wall seconds)."""
    _pin(core)
    while time.monotonic() < start_at:  # warm: the first span starts on a busy core, as the others do
        fixed_loop()

    def one_loop() -> int:
        fixed_loop()
        return 1

    return _count(one_loop, span_s, spans)


def echo(conn: Connection, core: int | None) -> float:
    """In a process of its own, pinned to ``core``: send back every message until ``b"q"``;
    the CPU seconds it used."""
    _pin(core)
    while (message := conn.recv_bytes()) != b"q":
        conn.send_bytes(message)
    return time.thread_time()


def ping(conn: Connection, core: int | None, span_s: float, spans: int) -> list[tuple[int, float, float]]:
    """In a process of its own, pinned to ``core``: one byte to :func:`echo` and back, as
    many times as fit in each of ``spans`` spans; per span (round trips, CPU s, wall s)."""
    _pin(core)

    def trips(n: int = 100) -> int:
        for _ in range(n):
            conn.send_bytes(b"x")
            conn.recv_bytes()
        return n

    trips()  # warm both ends
    out = _count(trips, span_s, spans)
    conn.send_bytes(b"q")
    return out


def _count(step: Callable[[], int], span_s: float, spans: int) -> list[tuple[int, float, float]]:
    """Call ``step`` (which says how many units it did) back to back for ``spans`` spans of
    ``span_s`` seconds; per span (units, this thread's CPU seconds, wall seconds)."""
    out = []
    end = time.monotonic()
    for _ in range(spans):
        end += span_s
        wall0, cpu0, units = time.monotonic(), time.thread_time(), 0
        while time.monotonic() < end:
            units += step()
        out.append((units, time.thread_time() - cpu0, time.monotonic() - wall0))
    return out


def _pin(core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def _cores() -> list[int | None]:
    if hasattr(os, "sched_getaffinity"):
        return list(sorted(os.sched_getaffinity(0)))
    return [None] * (os.cpu_count() or 1)


def measure(span_s: float, spans: int) -> dict[str, Any]:
    """Both parts, one after the other, each with the machine's other and stolen cores over
    the same time; the figures of :func:`summarize`."""
    ctx = multiprocessing.get_context("spawn")
    cores = _cores()
    start_at = time.monotonic() + START_S
    with ctx.Pool(len(cores)) as pool:
        pending = [pool.apply_async(spin, (core, start_at, span_s, spans)) for core in cores]
        time.sleep(max(start_at - time.monotonic(), 0.0))
        before = machine_busy()
        computed = [p.get() for p in pending]
        compute_load = _load(before, machine_busy(), computed)
    pair = (cores + cores)[:2]  # two cores, or the one there is twice
    with ctx.Pool(2) as pool:
        near, far = ctx.Pipe()
        echoing = pool.apply_async(echo, (far, pair[1]))
        before = machine_busy()
        trips = pool.apply_async(ping, (near, pair[0], span_s, spans)).get()
        after = machine_busy()
        trips_load = _load(before, after, [trips], echoing.get())
    out = summarize(
        {str(c if c is not None else i): r for i, (c, r) in enumerate(zip(cores, computed, strict=True))}, trips
    )
    out.update(
        span_s=span_s,
        spans=spans,
        iterations_per_loop=PROBE_LOOPS,
        loops=sum(loops for r in computed for loops, _, _ in r),
        cpu_s=round(sum(cpu for r in computed for _, cpu, _ in r), 3),
        compute_load=compute_load,
        round_trip_cores=[str(c) for c in pair],
        round_trip_load=trips_load,
    )
    return out


def _load(
    before: tuple[float, float, float],
    after: tuple[float, float, float],
    own: list[list[tuple[int, float, float]]],
    helper_cpu: float = 0.0,
) -> dict[str, float | None]:
    """The cores other processes used and the hypervisor stole while a part ran (its own
    processes' CPU, and the echo's, ``helper_cpu``, taken off the machine's busy time)."""
    wall = max((sum(w for _, _, w in r) for r in own), default=0.0)
    if wall <= 0:
        return {"other_cores": None, "steal_cores": None}
    cpu = sum(c for r in own for _, c, _ in r) + helper_cpu
    return {
        "other_cores": round(max(after[0] - before[0] - cpu, 0.0) / wall, 3),
        "steal_cores": round((after[2] - before[2]) / wall, 3),
    }


def summarize(
    per_core: dict[str, list[tuple[int, float, float]]], trips: list[tuple[int, float, float]]
) -> dict[str, Any]:
    """Per span: loops per CPU second per core and for all cores together (the sum), round
    trips per second; for each, the slowest span over the fastest: the lowest ratio a program
    bound by this machine's speed could show over spans of this length. The machine's figure
    is the lower of the two (a worker is bound by both)."""
    cores: dict[str, Any] = {}
    for core, spans in per_core.items():
        rates = [loops / cpu for loops, cpu, _ in spans if cpu > 0]
        cores[core] = {
            "loops_per_cpu_s": [round(r, 1) for r in rates],
            "on_cpu": [round(cpu / wall, 3) for _, cpu, wall in spans if wall > 0],
            "slowest_over_fastest": _ratio(rates),
        }
    n = min((len(c["loops_per_cpu_s"]) for c in cores.values()), default=0)
    together = [sum(c["loops_per_cpu_s"][i] for c in cores.values()) for i in range(n)]
    per_s = [k / wall for k, _, wall in trips if wall > 0]
    ratios = [r for r in (_ratio(together), _ratio(per_s)) if r is not None]
    return {
        "cores": cores,
        "together_loops_per_cpu_s": [round(v, 1) for v in together],
        "compute_slowest_over_fastest": _ratio(together),
        "round_trips_per_s": [round(v) for v in per_s],
        "round_trip_us": [round(1e6 / v, 1) for v in per_s if v > 0],
        "round_trips_slowest_over_fastest": _ratio(per_s),
        "slowest_over_fastest": min(ratios, default=None),
        "floor": FLOOR,
    }


def _ratio(values: list[float]) -> float | None:
    return round(min(values) / max(values), 3) if values and max(values) > 0 else None


@scenario("machine", on_demand=True)
def run_scenario(bench: Bench, budget_s: float) -> None:
    """The ``machine`` scenario of ``jobqueue bench`` (its length is --machine-seconds, not the budget)."""
    seconds = bench.config.extra.get("machine_seconds") or (QUICK_MACHINE_S if bench.config.quick else MACHINE_S)
    span = QUICK_SPAN_S if bench.config.quick else SPAN_S
    spans = int(float(seconds) // span)
    if spans < 2:
        raise BenchError(f"machine_seconds: at least {2 * span:g} (two spans of {span:g} s) to compare spans")
    bench.begin(f"machine: compute, then round trips, {spans} spans of {span:g} s each", None)
    started = time.monotonic()
    figures = measure(span, spans)
    # the row's rate: loops per CPU second, over all cores and spans
    m = Measured(int(figures["loops"]), float(figures["cpu_s"]), False, extra=figures)
    m.extra["seconds_wall"] = round(time.monotonic() - started, 1)
    row = bench.record(
        "machine", "machine", f"compute and round trips, {spans} spans of {span:g} s", "jobqueue", 0, 0, m
    )
    row.target = f"slowest / fastest >= {FLOOR:.0%} for the overload's floor to be reachable"
    row.met = (figures["slowest_over_fastest"] or 0.0) >= FLOOR


@table
def print_table(bench: Bench, console: Any) -> None:
    """The machine check's spans: compute per core and together, then round trips."""
    from rich.table import Table

    row = bench.row("machine")
    if row is None:
        return
    s = row.extra
    out = Table(
        title=f"The machine alone, nothing of jobqueue running: spans of {s['span_s']:g} s",
        title_justify="left",
    )
    for heading in ("part", "per span", "meanwhile", "slowest / fastest"):
        out.add_column(heading)

    def meanwhile(load: dict[str, Any]) -> str:
        return f"other processes {load.get('other_cores')} cores, stolen {load.get('steal_cores')}"

    for core, c in s["cores"].items():
        on_cpu = f"on its core {min(c['on_cpu'], default=0):.2f}-{max(c['on_cpu'], default=0):.2f} of the time"
        out.add_row(f"compute, core {core} (loops / CPU s)", _spans(c["loops_per_cpu_s"]), on_cpu,
                    str(c["slowest_over_fastest"]))  # fmt: skip
    out.add_row("compute, all cores", _spans(s["together_loops_per_cpu_s"]), meanwhile(s["compute_load"]),
                str(s["compute_slowest_over_fastest"]))  # fmt: skip
    cores = " and ".join(s["round_trip_cores"])
    each = s["round_trip_us"]
    trips = f"{_spans(s['round_trips_per_s'])} ({min(each, default=0):g}-{max(each, default=0):g} µs each)"
    out.add_row(f"round trips / s, cores {cores}", trips, meanwhile(s["round_trip_load"]),
                str(s["round_trips_slowest_over_fastest"]))  # fmt: skip
    reachable = "[green]reachable[/]" if row.met else "[red]not reachable on this machine[/]"
    out.add_row(
        "the machine (the lower)", "", "", f"{s['slowest_over_fastest']}: the overload's {FLOOR:.0%} floor {reachable}"
    )
    console.print(out)


def _spans(values: list[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)
