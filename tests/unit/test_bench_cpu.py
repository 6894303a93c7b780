"""The overload run's CPU accounting (jobqueue/bench/cpu.py): per-window arithmetic on /proc reads."""

from __future__ import annotations

import os
import random
from typing import Any

from jobqueue.bench.cpu import CpuSampler, proc_times, speed_probe
from jobqueue.bench.overload_verdict import Window, summarize


def _read(
    pids: dict[int, tuple[str, float]], reaped: float, busy: float, total: float, steal: float = 0.0, probe: float = 0.0
) -> dict[str, Any]:
    return {"pids": pids, "reaped": reaped, "busy": busy, "total": total, "steal": steal, "probe": probe}


def test_a_window_counts_each_process_once_including_one_that_exited() -> None:
    prev = _read({1: ("pg_worker", 10.0), 2: ("pg_autovacuum", 1.0), 3: ("worker", 5.0)}, 100.0, 50.0, 100.0)
    # pid 2 (an autovacuum worker) exited with 1.5 s in all: the postmaster's children total
    # grew by its whole life, 1.5 s, of which 1.0 s was counted by the last read
    cur = _read({1: ("pg_worker", 12.0), 3: ("worker", 6.0), 4: ("pg_autovacuum", 0.25)}, 101.5, 58.0, 110.0)
    w = CpuSampler.window(prev, cur, 5.0)
    assert w is not None
    assert w["pg_worker"] == 0.4 and w["worker"] == 0.2
    assert w["pg_autovacuum"] == round((0.5 + 0.25) / 5.0, 3)  # the exited one's last 0.5 s + the new one
    assert w["machine_busy"] == 1.6 and w["machine_cores"] == 2.0
    assert w["pg_other"] == 0.0 and w["bench"] == 0.0


def test_a_reused_pid_in_another_group_counts_from_zero() -> None:
    prev = _read({7: ("pg_producer", 30.0)}, 0.0, 0.0, 0.0)
    cur = _read({7: ("pg_autovacuum", 0.5)}, 0.0, 1.0, 2.0)
    w = CpuSampler.window(prev, cur, 1.0)
    assert w is not None and w["pg_autovacuum"] == 0.5 and w["pg_producer"] == 0.0


def test_no_window_without_two_reads() -> None:
    assert CpuSampler.window(None, _read({}, 0, 0, 0), 5.0) is None
    assert CpuSampler.window(_read({}, 0, 0, 0), None, 5.0) is None


def test_proc_times_reads_this_process_and_none_for_a_gone_one() -> None:
    me = proc_times(os.getpid())
    assert me is not None and me[0] > 0 and me[2] == os.getppid()
    assert proc_times(2**22 + 12345) is None


def test_a_window_carries_the_cores_stolen_and_the_speed_probe_at_its_end() -> None:
    prev = _read({}, 0.0, 10.0, 20.0, steal=1.0, probe=3000.0)
    cur = _read({}, 0.0, 18.0, 30.0, steal=1.5, probe=3600.0)
    w = CpuSampler.window(prev, cur, 5.0)
    assert w is not None and w["machine_steal"] == 0.1 and w["probe_us"] == 3600.0


def test_the_speed_probe_measures_cpu_time_not_waiting() -> None:
    import time

    start = time.monotonic()
    probe = speed_probe()
    assert 0 < probe <= (time.monotonic() - start) * 1e6 * 1.01


def _window(t: float, phase: str, rate: float, backlog: int, probe: float) -> Window:
    return Window(
        t=t, phase=phase, offered=0.0, enqueued=0, claimed=0, enqueue_rate=0.0, completion_rate=rate,
        backlog=backlog, claim_calls=0, claim_ms=None, claim_source="", claim_buffers=None, claim_max_ms=None,
        explain=None, table={}, indexes={}, claim_index=None, loadavg_1m=0.0,
        cpu={"probe_us": probe, "machine_steal": 0.1},
    )  # fmt: skip


def test_the_verdict_is_judged_on_completions_as_measured_and_says_how_the_machine_swung() -> None:
    """Completions fall by a third while the machine (the probe) slows by as much: the verdict
    misses, and says the machine's slowest 30 s ran at two thirds of its fastest."""
    windows = [_window(0.0, "capacity", 1000.0, 0, 3000.0)]
    for i in range(40):
        slow = 20 <= i < 30
        rate, probe = (670.0, 4478.0) if slow else (1000.0, 3000.0)
        windows.append(_window(5.0 * (i + 1), "overload", rate, 1000 * (i + 1), probe))
    for i in range(16):
        windows.append(_window(205.0 + 5 * i, "recovery", 1000.0, 30_000 - 1000 * i, 3000.0))
    s = summarize(windows, {"rate": 800.0}, 5.0, 0, 0)
    assert s["met_overload"] is False and s["overload_min_over_peak"] == 0.67
    assert s["machine_speed_min_over_max"] == 0.67 and s["machine_steal_mean_cores"] == 0.1
    # no probe in the windows (a JSON written before it): no figures of the machine
    for w in windows:
        w.cpu = None
    assert "machine_speed_min_over_max" not in summarize(windows, {"rate": 800.0}, 5.0, 0, 0)


def _run_of(rates: list[float], backlog_step: int) -> list[Window]:
    windows = [_window(0.0, "capacity", 1000.0, 0, 3000.0)]
    for i, rate in enumerate(rates):
        windows.append(_window(5.0 * (i + 1), "overload", rate, backlog_step * (i + 1), 3000.0))
    return windows


def test_the_trend_shows_a_collapse_as_the_backlog_grows() -> None:
    """The issue's collapse: completions x backlog constant. The slope is steeply negative and
    its interval far from zero."""
    rates = [min(1000.0, 2e7 / (20_000 * (i + 1))) for i in range(60)]
    s = summarize(_run_of(rates, 20_000), {"rate": 1000.0}, 5.0, 0, 0)
    assert s["trend_points"] == 9  # 58 judged windows after the ramp: 9 blocks of 6
    assert s["trend_pct_per_million"] < -50
    assert s["trend_pct_per_million"] + s["trend_pct_per_million_ci95"] < 0


def test_a_flat_run_has_no_trend_whatever_its_seconds_do() -> None:
    """Completions that swing by 20 % window to window but do not follow the backlog: the
    slope is near zero and its interval holds zero."""
    noise = random.Random(13)
    rates = [1000.0 * noise.uniform(0.8, 1.0) for _ in range(60)]
    s = summarize(_run_of(rates, 20_000), {"rate": 1000.0}, 5.0, 0, 0)
    assert abs(s["trend_pct_per_million"]) <= s["trend_pct_per_million_ci95"]
    assert abs(s["trend_pct_per_million"]) < 10


def test_no_trend_from_a_short_run_or_a_backlog_that_did_not_move() -> None:
    assert "trend_pct_per_million" not in summarize(_run_of([1000.0] * 20, 1000), {"rate": 1000.0}, 5.0, 0, 0)
    assert "trend_pct_per_million" not in summarize(_run_of([900.0, 1000.0] * 30, 0), {"rate": 1000.0}, 5.0, 0, 0)


def test_the_verdict_table_prints_the_trend_as_information() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from jobqueue.bench.overload_verdict import print_table

    rates = [min(1000.0, 2e7 / (20_000 * (i + 1))) for i in range(60)]
    s = summarize(_run_of(rates, 20_000), {"rate": 1000.0}, 5.0, 0, 0)
    console = Console(record=True, width=240)
    bench: Any = SimpleNamespace(row=lambda key: SimpleNamespace(extra=s) if key == "overload" else None)
    print_table(bench, console)
    text = console.export_text()
    line = next(x for x in text.splitlines() if "trend with the backlog" in x)
    assert f"{s['trend_pct_per_million']:+.1f} % per million waiting" in line and "(information)" in line


def test_the_verdict_table_prints_the_machine_check_when_it_ran_before() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from jobqueue.bench.overload_verdict import print_table

    s = summarize(_run_of([1000.0] * 60, 20_000), {"rate": 1000.0}, 5.0, 0, 0)
    machine = {"span_s": 30.0, "slowest_over_fastest": 0.874, "compute_slowest_over_fastest": 0.921,
               "round_trips_slowest_over_fastest": 0.874}  # fmt: skip
    rows = {"overload": SimpleNamespace(extra=s), "machine": SimpleNamespace(extra=machine)}
    for present in (False, True):
        console = Console(record=True, width=240)
        ran = rows if present else {"overload": rows["overload"]}
        bench: Any = SimpleNamespace(row=ran.get)
        print_table(bench, console)
        lines = [x for x in console.export_text().splitlines() if "the machine alone" in x]
        assert bool(lines) == present
        if present:
            assert "slowest / fastest 30 s" in lines[0] and "0.874 (compute 0.921, round trips 0.874)" in lines[0]


def _stolen_run(steal: list[float], rate_of: Any) -> list[Window]:
    windows = [_window(0.0, "capacity", 1000.0, 0, 3000.0)]
    for i, x in enumerate(steal):
        w = _window(5.0 * (i + 1), "overload", rate_of(i, x), 1000 * (i + 1), 3000.0)
        w.cpu = {"probe_us": 3000.0, "machine_steal": x}
        windows.append(w)
    return windows


def test_a_swing_that_follows_the_steal_is_told_apart_from_one_that_does_not() -> None:
    """Completions lose 20 % per 0.1 core stolen, in stretches: the verdict misses as measured;
    the slope is -20 % per 0.1 core and, taken out, the run is flat (1.0). A swing of the same
    size that steal does not explain stays in the second figure."""
    steal = [0.1 if (i // 8) % 3 == 1 else 0.0 for i in range(60)]
    s = summarize(_stolen_run(steal, lambda i, x: 1000.0 - 2000.0 * x), {"rate": 1000.0}, 5.0, 0, 0)
    assert s["met_overload"] is False and s["overload_min_over_overload_peak"] == 0.8
    mean = sum(1000.0 - 2000.0 * x for x in steal[2:]) / len(steal[2:])
    assert s["steal_pct_per_tenth_core"] == round(-200.0 / mean * 100 * 0.1 * 10, 1)
    assert s["overload_min_over_overload_peak_steal_removed"] == 1.0
    # the same dips, but in stretches where nothing was stolen (steal elsewhere, no effect)
    other = [0.1 if (i // 8) % 3 == 2 else 0.0 for i in range(60)]
    s = summarize(_stolen_run(other, lambda i, x: 800.0 if (i // 8) % 3 == 1 else 1000.0), {"rate": 1000.0}, 5.0, 0, 0)
    assert s["overload_min_over_overload_peak"] == 0.8
    assert s["overload_min_over_overload_peak_steal_removed"] <= 0.8


def test_no_steal_figures_without_the_cpu_accounting_or_with_steal_that_never_varied() -> None:
    flat = summarize(_stolen_run([0.05] * 60, lambda i, x: 1000.0 - (i % 2) * 100), {"rate": 1000.0}, 5.0, 0, 0)
    assert "steal_pct_per_tenth_core" not in flat
    windows = _stolen_run([0.1 * (i % 2) for i in range(60)], lambda i, x: 1000.0)
    windows[10].cpu = None  # one window without the accounting: no figure rather than a partial one
    assert "overload_min_over_overload_peak_steal_removed" not in summarize(windows, {"rate": 1000.0}, 5.0, 0, 0)


def test_the_verdict_table_prints_the_steal_linked_figure_as_information() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from jobqueue.bench.overload_verdict import print_table

    steal = [0.1 if (i // 8) % 3 == 1 else 0.0 for i in range(60)]
    s = summarize(_stolen_run(steal, lambda i, x: 1000.0 - 2000.0 * x), {"rate": 1000.0}, 5.0, 0, 0)
    console = Console(record=True, width=240)
    bench: Any = SimpleNamespace(row=lambda key: SimpleNamespace(extra=s) if key == "overload" else None)
    print_table(bench, console)
    line = next(x for x in console.export_text().splitlines() if "steal-linked part taken out" in x)
    assert "1.0 (completions" in line and f"{s['steal_pct_per_tenth_core']:+.1f} % per 0.1 core" in line
    assert "(information)" in line
