"""The machine check (jobqueue/bench/machine.py): its figures from spans, and real processes."""

from __future__ import annotations

import os

from jobqueue.bench.machine import measure, summarize


def test_each_part_is_judged_by_its_slowest_span_over_its_fastest_and_the_machine_by_the_lower() -> None:
    # core 0 slows by a tenth in the second span, core 1 holds; the round trips lose a fifth
    cores = {"0": [(100, 1.0, 1.0), (90, 1.0, 1.0)], "1": [(100, 2.0, 2.0), (50, 1.0, 1.0)]}
    trips = [(1000, 0.4, 1.0), (1600, 0.6, 2.0)]
    s = summarize(cores, trips)
    assert s["cores"]["0"]["loops_per_cpu_s"] == [100.0, 90.0] and s["cores"]["0"]["slowest_over_fastest"] == 0.9
    assert s["cores"]["1"]["loops_per_cpu_s"] == [50.0, 50.0] and s["cores"]["1"]["slowest_over_fastest"] == 1.0
    assert s["together_loops_per_cpu_s"] == [150.0, 140.0] and s["compute_slowest_over_fastest"] == 0.933
    assert s["round_trips_per_s"] == [1000, 800] and s["round_trip_us"] == [1000.0, 1250.0]
    assert s["round_trips_slowest_over_fastest"] == 0.8
    assert s["slowest_over_fastest"] == 0.8 and s["floor"] == 0.9


def test_cpu_time_not_wall_time_counts_for_compute() -> None:
    # a span where the process had its core half the time did the same work per CPU second
    s = summarize({"0": [(100, 1.0, 1.0), (50, 0.5, 1.0)]}, [(10, 0.1, 1.0), (10, 0.1, 1.0)])
    assert s["cores"]["0"]["on_cpu"] == [1.0, 0.5] and s["compute_slowest_over_fastest"] == 1.0


def test_real_processes_on_every_core_then_a_round_trip_between_two() -> None:
    s = measure(0.2, 2)
    assert set(s["cores"]) == {str(c) for c in sorted(os.sched_getaffinity(0))}
    for core in s["cores"].values():
        assert len(core["loops_per_cpu_s"]) == 2 and all(v > 0 for v in core["loops_per_cpu_s"])
        assert 0 < core["slowest_over_fastest"] <= 1
    assert len(s["round_trips_per_s"]) == 2 and all(v > 0 for v in s["round_trips_per_s"])
    assert s["loops"] > 0 and s["cpu_s"] > 0 and s["spans"] == 2 and s["span_s"] == 0.2
    assert 0 < s["slowest_over_fastest"] <= 1
    for load in (s["compute_load"], s["round_trip_load"]):
        assert load["other_cores"] is not None and load["steal_cores"] is not None
