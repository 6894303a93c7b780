"""`jobqueue bench --only counters --quick`: the drain with the counter triggers off, then on.

A smoke test of the harness (no timed assertions): with the triggers off the drain counts
nothing; with them on it counts every completion, in far fewer rows than jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobqueue.bench.counters import ROUNDS, STATEMENT_ROUNDS

pytestmark = pytest.mark.timeout(240)


def test_quick_counters_bench(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JOBQUEUE_DATABASE_URL")}
    command = [sys.executable, "-m", "jobqueue", "--database-url", db_url, "bench", "--quick", "--no-progress"]
    proc = subprocess.run(
        [*command, "--only", "counters", "--jobs", "2000", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=220,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["scenarios"]["counters"]["rows"]}
    suffixes = ["", *(f".r{r}" for r in range(2, ROUNDS + 1))]
    statement = {"counters.statement.off", "counters.statement.on"}
    assert set(rows) == {f"counters.{state}{s}" for state in ("off", "on") for s in suffixes} | statement
    for key in statement:
        assert rows[key]["extra"]["calls"] == STATEMENT_ROUNDS and rows[key]["extra"]["median_ms"] > 0
    for s in suffixes:
        off, on = rows[f"counters.off{s}"], rows[f"counters.on{s}"]
        assert off["jobs"] == on["jobs"] == 2000 and not off["partial"] and not on["partial"]
        assert off["extra"]["completed_counted"] == 0 and off["extra"]["counter_rows"] == 0
        assert on["extra"]["completed_counted"] == 2000
        assert on["extra"]["counter_rows"] < 2000 / 2  # per statement, not per job (reconcile may fold them)
        assert on["baseline"] == f"counters.off{s}" and on["ratio"] is not None
    assert "counters on" in proc.stdout
