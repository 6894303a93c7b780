"""OVERLOAD-01 (issue 13): throughput must not collapse while the backlog grows.

`jobqueue bench --only overload` (jobqueue/bench/overload.py), shortened: a real worker
process (-c 32) drains an empty queue to measure its capacity, then a paced producer offers
1.3 x that for DURATION seconds (the backlog grows), then half of it until the backlog is
gone. Fails when the completion rate (30 s moving average, after the ramp) falls under 90 %
of the run's own peak during the overload, when the backlog did not grow, or when the
backlog did not drain at >= 90 % of the peak afterwards. The bench writes its JSON and PNG
under soak-results/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.soak.conftest import SCALE, Criterion

DURATION_S = {"quick": 60, "full": 240}[SCALE]
OUT = ROOT / "soak-results" / "overload.json"
#: capacity drain + overload + recovery (at most half the overload, or 60 s) + the bench's set-up
pytestmark = pytest.mark.timeout(DURATION_S * 4 + 900)


def test_overload_throughput(soak_db: Callable[[str], str], record: Callable[..., None]) -> None:
    url = soak_db("overload")
    command = [
        sys.executable,
        "-m",
        "jobqueue",
        "--database-url",
        url,
        "bench",
        "--only",
        "overload",
        "--duration",
        str(DURATION_S),
        "--backlog-jobs",
        "0",
        "--no-progress",
        "--json",
        str(OUT),
    ]
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, timeout=DURATION_S * 4 + 600)
    document: dict[str, Any] = json.loads(Path(OUT.with_name(OUT.stem + ".overload.json")).read_text())
    s = document["summary"]
    figures = {
        "duration_s": DURATION_S,
        "capacity_jobs_per_s": (s.get("capacity") or {}).get("rate"),
        "offered_overload": s.get("offered_overload"),
        "peak_rate_smoothed": s.get("peak_rate_smoothed"),
        "overload_min_rate_smoothed": s.get("overload_min_rate_smoothed"),
        "overload_min_over_peak": s.get("overload_min_over_peak"),
        "backlog_at_end_of_overload": s.get("backlog_at_end_of_overload"),
        "recovery_drain_rate": s.get("recovery_drain_rate"),
        "recovery_over_peak": s.get("recovery_over_peak"),
        "smoothing": s.get("smoothing"),
        # information, not judged: how much the machine itself swung (bench/cpu.py's probe)
        "machine_speed_min_over_max": s.get("machine_speed_min_over_max"),
        "machine_steal_mean_cores": s.get("machine_steal_mean_cores"),
        "machine_steal_max_cores": s.get("machine_steal_max_cores"),
        # information: the completions' slope on the backlog (% per million waiting, 95 %)
        "trend_pct_per_million": s.get("trend_pct_per_million"),
        "trend_pct_per_million_ci95": s.get("trend_pct_per_million_ci95"),
        "json": str(OUT.with_name(OUT.stem + ".overload.json")),
        "png": str(OUT.with_name(OUT.stem + ".overload.png")),
    }
    criteria = [
        Criterion("the backlog grew during the overload", bool(s.get("backlog_grew")),
                  f"backlog {s.get('backlog_at_end_of_overload')} at the end of the overload"),
        Criterion(
            "completions >= 90 % of the run's peak through the overload",
            bool(s.get("met_overload")),
            f"min {s.get('overload_min_rate_smoothed')} jobs/s vs peak {s.get('peak_rate_smoothed')} "
            f"({s.get('overload_min_over_peak')})",
        ),
        Criterion(
            "the backlog drains at >= 90 % of the peak at half the offered rate",
            bool(s.get("met_recovery")),
            f"{s.get('recovery_drain_rate')} jobs/s ({s.get('recovery_over_peak')} of the peak)",
        ),
    ]
    record("OVERLOAD-01", figures, criteria)
    for c in criteria:
        assert c.ok, f"{c.name}: {c.detail}"
