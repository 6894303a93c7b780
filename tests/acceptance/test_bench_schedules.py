"""`jobqueue bench --only schedules --quick`: the schedules scenario reports its three figures.

A smoke test of the harness (no timed assertions): the exactly-once figure is a count, so it is
asserted: no tick fired twice, none missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)


def test_quick_schedules_bench(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JOBQUEUE_DATABASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "jobqueue", "--database-url", db_url, "bench", "--quick", "--no-progress",
         "--only", "schedules", "--json", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=220, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["scenarios"]["schedules"]["rows"]}
    assert set(rows) == {"schedules.fire_lag", "schedules.exactly_once", "schedules.reconcile_due",
                         "schedules.reconcile_idle"}
    lag = rows["schedules.fire_lag"]["extra"]
    assert lag["ticks"] >= 10 and lag["p50_ms"] is not None and lag["p99_ms"] is not None
    once = rows["schedules.exactly_once"]["extra"]
    assert once["fired_twice"] == 0 and once["missed"] == 0 and once["errors"] == []
    assert once["schedules"] == 4 and once["ticks"] > 4 * 60
    assert rows["schedules.reconcile_due"]["extra"]["jobs_enqueued_per_call"] >= 100
    assert "Periodic schedules" in proc.stdout
