"""The overload run's CPU accounting (jobqueue/bench/cpu.py): per-window arithmetic on /proc reads."""

from __future__ import annotations

import os
from typing import Any

from jobqueue.bench.cpu import CpuSampler, proc_times


def _read(pids: dict[int, tuple[str, float]], reaped: float, busy: float, total: float) -> dict[str, Any]:
    return {"pids": pids, "reaped": reaped, "busy": busy, "total": total}


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
