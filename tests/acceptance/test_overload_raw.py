"""bench/overload_raw.py: the overload harness on a minimal queue, and its bad inputs.

A smoke test of the script (no timed assertions): a 10 s overload on a tiny capacity drain;
the windows carry the phases, the rates and the cores, the verdict is the one
``jobqueue bench --only overload`` prints, no more claims are counted than jobs were
inserted, and its database is gone afterwards. Bad options are refused before any database is made, naming the option.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.timeout(240)

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "overload_raw.py"
RAW_DATABASES = "SELECT count(*) FROM pg_database WHERE datname LIKE 'jqraw\\_%%'"


def _run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=200, check=False
    )


def _raw_databases(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(RAW_DATABASES).fetchone()
    assert row is not None
    return int(row[0])


def test_a_short_overload_of_the_minimal_queue_is_judged_as_jobqueues_and_leaves_nothing(
    db_url: str, tmp_path: Path
) -> None:
    before = _raw_databases(db_url)
    out = tmp_path / "raw.json"
    proc = _run(db_url, "--duration", "10", "--capacity-jobs", "5000", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    document = json.loads(out.read_text())
    summary, windows = document["summary"], document["windows"]
    phases = [w["phase"] for w in windows]
    assert "overload" in phases and "recovery" in phases, phases
    # phases in order, never back
    order = ["capacity", "overload", "recovery", "recovered"]
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases)
    over = [w for w in windows if w["phase"] == "overload"]
    assert all(w["offered"] == summary["offered_overload"] for w in over)
    assert summary["offered_recovery"] == pytest.approx(summary["capacity"]["rate"] / 2, rel=0.01)
    assert summary["offered_overload"] == pytest.approx(summary["capacity"]["rate"] * 1.3, rel=0.01)
    # claims are counted from the lease sequence: never more than were inserted (the
    # capacity load and what the producer offered)
    assert sum(w["claimed"] for w in windows) <= 5000 + summary["jobs_offered"]
    assert all(w["completion_rate"] >= 0 and w["backlog"] >= 0 for w in windows)
    assert {"overload_min_over_peak", "recovery_over_peak", "met_overload", "met_recovery"} <= set(summary)
    if sys.platform == "linux":
        assert all(w["cpu"] and w["cpu"]["worker"] >= 0 and w["cpu"]["probe_us"] > 0 for w in windows[1:])
    if importlib.util.find_spec("matplotlib") is not None:
        assert out.with_suffix(".png").stat().st_size > 0
    assert '"overload_min_over_peak"' in proc.stdout
    assert _raw_databases(db_url) == before


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--duration", "5"], "--duration"),
        (["--factor", "1"], "--factor"),
        (["--capacity-jobs", "10"], "--capacity-jobs"),
        (["--duration", "soon"], "--duration"),
    ],
)
def test_a_bad_option_is_refused_naming_it_before_any_database_is_made(
    db_url: str, args: list[str], option: str
) -> None:
    before = _raw_databases(db_url)
    proc = _run(db_url, *args)
    assert proc.returncode == 2 and option in proc.stderr, proc.stderr
    assert _raw_databases(db_url) == before


def test_the_minimal_queues_table_has_jobqueue_jobs_storage_settings(db_url: str) -> None:
    """So that autovacuum visits both tables alike: the WITH list of raw_job in the script
    is jobqueue.job's, as the migrations leave it (a change to one without the other fails)."""
    spec = importlib.util.spec_from_file_location("overload_raw", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    block = module.SCHEMA.split(") WITH (", 1)[1].split(");", 1)[0]
    mine = {line.strip().rstrip(",").replace(" = ", "=") for line in block.splitlines() if "=" in line}
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'jobqueue.job'::regclass").fetchone()
    assert row is not None
    assert mine == set(row[0])
