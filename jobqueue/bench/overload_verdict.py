"""The overload run's verdict (:mod:`jobqueue.bench.overload`): its sampling windows, the
figures judged from them, and its table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobqueue.bench.core import Bench
from jobqueue.bench.registry import table


@dataclass
class Window:
    """One sampling window (times in seconds since the run's start, rates per second)."""

    t: float
    phase: str
    offered: float
    enqueued: int
    claimed: int
    enqueue_rate: float
    completion_rate: float
    backlog: int
    claim_calls: int
    claim_ms: float | None
    claim_source: str
    claim_buffers: float | None
    claim_max_ms: float | None
    explain: dict[str, Any] | None
    table: dict[str, Any]
    indexes: dict[str, Any]
    claim_index: dict[str, Any] | None
    loadavg_1m: float
    #: Cores used in the window by the worker, the bench and the server's parts (bench/cpu.py).
    cpu: dict[str, float] | None = None
    #: The server's WAL in the window (pg_stat_wal: records, full-page images, bytes) and the
    #: checkpoints begun in it: a checkpoint makes every page's next change write a full image.
    wal: dict[str, float] | None = None


#: Completions must stay >= this fraction of the run's peak through the overload window.
FLOOR = 0.90
#: The backlog drain must be within this fraction of the empty-queue drain.
BACKLOG_TOLERANCE = 0.10
#: Rates are compared over moving averages of this many windows (30 s at 5 s windows):
#: a single 5 s window on a shared 2-core machine swings by more than the effect.
SMOOTH = 6
#: The first windows of a phase are its ramp (workers picking up speed): not judged.
RAMP_WINDOWS = 2


def summarize(
    windows: list[Window], capacity: dict[str, Any] | None, window_s: float, backlog_jobs: int, sent: int
) -> dict[str, Any]:
    """The verdict of a run from its windows (also usable on a JSON written earlier: resummarize)."""
    cap = float((capacity or {}).get("rate") or 0.0)
    n_over = sum(1 for w in windows if w.phase == "overload")
    k = max(1, min(SMOOTH, n_over // 4))
    # the judged windows: overload (after its ramp) and recovery; the capacity drain before
    # them is not averaged in (its own rate is in "capacity")
    first = next((i for i, w in enumerate(windows) if w.phase == "overload"), len(windows))
    judged = [
        i
        for i, w in enumerate(windows)
        if w.phase in ("overload", "recovery") and i >= first + min(RAMP_WINDOWS, n_over // 4)
    ]
    smooth = [0.0] * len(windows)
    for j, i in enumerate(judged):
        part = [windows[x].completion_rate for x in judged[max(0, j - k + 1) : j + 1]]
        smooth[i] = sum(part) / len(part)
    peak = max((smooth[i] for i in judged[k - 1 :]), default=0.0)
    overload = [i for i in judged if windows[i].phase == "overload"]
    over = overload[k - 1 :]
    over_min = min((smooth[i] for i in over), default=0.0)
    # the overload's own peak: how flat the overload is in itself (the verdict's peak is the
    # run's, over the recovery too, where the producer offers 2.6x less on the same machine)
    over_peak = max((smooth[i] for i in over), default=0.0)
    raw_over = [windows[i].completion_rate for i in over]
    out_machine = _the_machine(windows, judged, k)
    # recovery: windows whose backlog at their end still held more than a window's worth
    rec = [i for i, w in enumerate(windows) if w.phase == "recovery" and w.backlog > cap * window_s][RAMP_WINDOWS:]
    rec_rate = _mean([windows[i].completion_rate for i in rec])
    backlog_grew = bool(over) and windows[over[-1]].backlog > windows[over[0]].backlog
    out: dict[str, Any] = {
        "capacity": capacity,
        "offered_overload": next((w.offered for w in windows if w.phase == "overload"), None),
        "offered_recovery": next((w.offered for w in windows if w.phase == "recovery"), None),
        "peak_rate_smoothed": round(peak, 1),
        "overload_min_rate_smoothed": round(over_min, 1),
        "overload_min_over_peak": round(over_min / peak, 3) if peak else None,
        "overload_peak_rate_smoothed": round(over_peak, 1),
        "overload_min_over_overload_peak": round(over_min / over_peak, 3) if over_peak else None,
        "overload_min_rate_raw": min(raw_over, default=None),
        "overload_mean_rate": round(_mean(raw_over), 1),
        "backlog_at_end_of_overload": windows[over[-1]].backlog if over else None,
        "backlog_grew": backlog_grew,
        "recovery_drain_rate": round(rec_rate, 1),
        "recovery_over_peak": round(rec_rate / peak, 3) if peak else None,
        "smoothing": f"moving average of {k} windows of {window_s:g} s",
        "floor": FLOOR,
        "jobs_offered": sent,
    }
    out.update(out_machine)
    out.update(_trend(windows, overload, k))
    out.update(_steal(windows, overload, k))
    out["met_overload"] = bool(peak) and over_min >= FLOOR * peak and backlog_grew
    out["met_recovery"] = bool(peak) and bool(rec) and rec_rate >= FLOOR * peak
    # the drains under half the capacity offered: windows whose backlog still held more than a
    # window's worth at their end, after a ramp window (the worker just started)
    drains = {}
    for phase in ("reference", "backlog"):
        idx = [i for i, w in enumerate(windows) if w.phase == phase and w.backlog > cap * window_s][1:]
        drains[phase] = _mean([windows[i].completion_rate for i in idx]) if idx else None
    rate, ref = drains["backlog"], drains["reference"]
    if rate is not None:
        out["backlog_jobs"] = backlog_jobs
        out["backlog_drain_rate"] = round(rate, 1)
        out["reference_drain_rate"] = None if ref is None else round(ref, 1)
        out["backlog_over_reference"] = round(rate / ref, 3) if ref else None
        out["backlog_over_capacity"] = round(rate / cap, 3) if cap else None
        out["met_backlog"] = bool(ref) and rate >= (1 - BACKLOG_TOLERANCE) * (ref or 0.0)
    return out


def _the_machine(windows: list[Window], judged: list[int], k: int) -> dict[str, Any]:
    """How much the machine itself swung, as information beside the verdict: the speed
    probe's slowest 30 s over its fastest (bench/cpu.py: CPU time of a fixed loop, so it
    sees slower cores, not cores taken away) and the cores the hypervisor gave other guests
    (steal), which the probe does not see and which, in the 10-minute run of 2026-12-07
    06:58 UTC, came with every low stretch. Empty when the windows carry no probe (not
    Linux, or a JSON written before it)."""
    probes = {i: float((windows[i].cpu or {}).get("probe_us") or 0.0) for i in judged}
    if not judged or not all(probes.values()):
        return {}
    speed = [_mean([1.0 / probes[x] for x in judged[max(0, j - k + 1) : j + 1]]) for j in range(len(judged))][k - 1 :]
    stolen = [float((windows[i].cpu or {}).get("machine_steal") or 0.0) for i in judged]
    return {
        "machine_speed_min_over_max": round(min(speed) / max(speed), 3) if speed else None,
        "machine_steal_mean_cores": round(_mean(stolen), 3),
        "machine_steal_max_cores": round(max(stolen, default=0.0), 3),
    }


def _steal(windows: list[Window], over: list[int], k: int) -> dict[str, Any]:
    """How much of the overload's swing went with the cores the hypervisor gave other guests,
    as information beside the verdict: the least-squares slope of each window's completion
    rate on the cores stolen in it (% of the mean rate per 0.1 core), and the lowest over the
    highest moving average of ``k`` windows once that linear part is taken out (each rate
    minus slope x its steal). Steal is what a guest can see of its neighbours; they slow it
    beyond the cores they take (shared caches and memory), which the slope carries too. On
    the machine of 2026-12-07 18:31 UTC jobqueue and a minimal SKIP LOCKED queue
    (bench/overload_raw.py) each lost ~19 % per 0.1 core, and each came to 0.810 without it;
    in the pair after, 0.738 (minimal queue) and 0.711 (jobqueue): it explains part, not all.
    Empty without the CPU accounting, with fewer than 2k windows, or with steal that never
    varied."""
    pts = [
        (float(cpu["machine_steal"]), windows[i].completion_rate)
        for i in over
        if (cpu := windows[i].cpu) is not None and cpu.get("machine_steal") is not None
    ]
    if len(pts) < 2 * k or len(pts) < len(over):
        return {}
    mx, my = _mean([x for x, _ in pts]), _mean([y for _, y in pts])
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    # steal is recorded to 0.001 core: a spread under that is none
    if max(x for x, _ in pts) - min(x for x, _ in pts) < 0.0005 or my <= 0:
        return {}
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    rest = [y - slope * x for x, y in pts]
    smooth = [_mean(rest[j - k + 1 : j + 1]) for j in range(k - 1, len(rest))]
    if max(smooth) <= 0:
        return {}
    return {
        "steal_pct_per_tenth_core": round(100 * slope * 0.1 / my, 1),
        "overload_min_over_overload_peak_steal_removed": round(min(smooth) / max(smooth), 3),
    }


#: Two-sided 95 % points of Student's t by degrees of freedom (1-30; the normal's beyond).
_T95 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11,
        2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04)  # fmt: skip


def _trend(windows: list[Window], over: list[int], k: int) -> dict[str, Any]:
    """Whether completions fall as the backlog grows, the failure the issue's collapse was
    (completions x backlog constant): the least-squares slope of the overload's completion
    rate on its backlog, in % of the mean rate per million waiting jobs, with its 95 %
    interval. Fitted on means of consecutive non-overlapping blocks of ``k`` windows (30 s),
    so that neighbouring windows, which share the machine's slow and fast seconds, do not
    count as independent points. Information beside the verdict: a machine that slows for a
    minute tilts it too. Empty with fewer than 4 blocks or a backlog that did not move."""
    blocks = [over[i : i + k] for i in range(0, len(over) - k + 1, k)]
    if len(blocks) < 4:
        return {}
    x = [_mean([windows[i].backlog / 1e6 for i in b]) for b in blocks]
    y = [_mean([windows[i].completion_rate for i in b]) for b in blocks]
    mx, my = _mean(x), _mean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx <= 0 or my <= 0:
        return {}
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sxx
    rss = sum((b - my - slope * (a - mx)) ** 2 for a, b in zip(x, y, strict=True))
    dof = len(blocks) - 2
    half = _T95[dof - 1] if dof <= len(_T95) else 1.96
    half *= (rss / dof / sxx) ** 0.5
    return {
        "trend_pct_per_million": round(100 * slope / my, 1),
        "trend_pct_per_million_ci95": round(100 * half / my, 1),
        "trend_points": len(blocks),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@table
def print_table(bench: Bench, console: Any) -> None:
    """The overload run's verdict, and where its windows and plot were written."""
    from rich.table import Table

    row = bench.row("overload")
    if row is None:
        return
    s = row.extra
    cap = (s.get("capacity") or {}).get("rate")

    def rate(v: Any) -> str:
        return "-" if v is None else f"{float(v):,.0f} jobs/s"

    def mark(met: Any) -> str:
        return "[green]met[/]" if met else "[red]missed[/]"

    out = Table(title=f"Overload ({s.get('smoothing')})", title_justify="left")
    for heading in ("figure", "result", "target"):
        out.add_column(heading)
    out.add_row("capacity (empty-queue drain)", rate(cap), "")
    offered = f"{rate(s.get('offered_overload'))} / {rate(s.get('offered_recovery'))}"
    out.add_row("offered: overload / recovery", offered, "")
    out.add_row("overload: mean completions", rate(s.get("overload_mean_rate")), "")
    out.add_row(
        "overload: lowest / the run's peak",
        f"{rate(s.get('overload_min_rate_smoothed'))} / {rate(s.get('peak_rate_smoothed'))} = "
        f"{s.get('overload_min_over_peak')}; backlog at its end {s.get('backlog_at_end_of_overload') or 0:,}",
        f">= {FLOOR:.0%} {mark(s.get('met_overload'))}",
    )
    out.add_row(
        "overload: lowest / the overload's own peak",
        f"{s.get('overload_min_over_overload_peak')} (peak {rate(s.get('overload_peak_rate_smoothed'))})",
        "(information)",
    )
    if s.get("trend_pct_per_million") is not None:
        out.add_row(
            "overload: completions' trend with the backlog",
            f"{s['trend_pct_per_million']:+.1f} % per million waiting (95 %: "
            f"±{s['trend_pct_per_million_ci95']:.1f}; {s.get('trend_points')} blocks of 30 s)",
            "(information)",
        )
    if s.get("machine_speed_min_over_max") is not None:
        out.add_row(
            "the machine: slowest / fastest 30 s (speed probe); cores stolen",
            f"{s.get('machine_speed_min_over_max')}; {s.get('machine_steal_mean_cores')} mean, "
            f"{s.get('machine_steal_max_cores')} in the worst window",
            "(information)",
        )
    if s.get("overload_min_over_overload_peak_steal_removed") is not None:
        out.add_row(
            "overload: lowest / its own peak, the steal-linked part taken out",
            f"{s['overload_min_over_overload_peak_steal_removed']} (completions "
            f"{s['steal_pct_per_tenth_core']:+.1f} % per 0.1 core stolen)",
            "(information)",
        )
    machine = bench.row("machine")  # --only machine,overload: the check ran just before
    if machine is not None:
        m = machine.extra
        out.add_row(
            f"the machine alone, before the run: slowest / fastest {m.get('span_s', 30):g} s",
            f"{m.get('slowest_over_fastest')} (compute {m.get('compute_slowest_over_fastest')}, "
            f"round trips {m.get('round_trips_slowest_over_fastest')})",
            "(information)",
        )
    out.add_row(
        "recovery: drain / the run's peak",
        f"{rate(s.get('recovery_drain_rate'))} = {s.get('recovery_over_peak')}",
        f">= {FLOOR:.0%} {mark(s.get('met_recovery'))}",
    )
    if "met_backlog" in s:
        out.add_row(
            f"{s.get('backlog_jobs') or 0:,}-job backlog drain / reference",
            f"{rate(s.get('backlog_drain_rate'))} / {rate(s.get('reference_drain_rate'))} = "
            f"{s.get('backlog_over_reference')}",
            f">= {1 - BACKLOG_TOLERANCE:.0%} {mark(s.get('met_backlog'))}",
        )
    out.add_row("windows (JSON) / plot (PNG)", f"{s.get('json')} / {s.get('png')}", "")
    console.print(out)
