"""`jobqueue bench --quick` end to end against the test's server: every scenario reports rates.

A smoke test of the harness, not of performance: no timed assertions. The bench derives its
scratch databases from the test database's name on the same server and drops them after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from jobqueue import bench

pytestmark = pytest.mark.timeout(120)


def test_quick_bench_reports_every_scenario(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JOBQUEUE_DATABASE_URL")}
    command = [sys.executable, "-m", "jobqueue", "--database-url", db_url, "bench", "--quick", "--no-progress"]
    proc = subprocess.run(
        [*command, "--max-seconds", "30", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    document = json.loads(out.read_text())
    assert set(document["scenarios"]) == set(bench.SCENARIOS)
    for name, scenario in document["scenarios"].items():
        assert scenario["error"] is None, (name, scenario["error"])
        assert scenario["rows"], name
        for row in scenario["rows"]:
            assert row["jobs"] > 0 and row["rate"] > 0, (name, row)
    keys = {row["key"] for scenario in document["scenarios"].values() for row in scenario["rows"]}
    assert {"baseline.copy", "baseline.insert.p1", "baseline.claim_delete.p1", "baseline.claim_delete.p2"} <= keys
    assert {"enqueue.many", "enqueue.single.p1", "enqueue.single.p4", "drain.p1", "drain.p2"} <= keys
    assert {"latency.50", "latency.500", "history.empty", "history.retained", "cost.drain"} <= keys
    drain = next(r for r in document["scenarios"]["drain"]["rows"] if r["key"] == "drain.p1")
    assert drain["baseline"] == "drain.baseline.p1" and drain["ratio"] > 0
    latency = next(r for r in document["scenarios"]["latency"]["rows"] if r["key"] == "latency.50")
    assert latency["extra"]["p50_ms"] is not None and latency["extra"]["missing"] == 0
    assert "Throughput" in proc.stdout and "Wake-up latency" in proc.stdout and "Cost per job" in proc.stdout

    # The scratch databases are gone; the test database (the one pointed at) is untouched.
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{dbname}_bench%",)).fetchall()
        assert left == []
        assert conn.execute("SELECT jobqueue.schema_version()").fetchone() is not None


def test_scratch_database_is_never_the_one_pointed_at() -> None:
    assert bench.scratch_name("postgresql://u@h/app") == "app_bench"
    assert bench.scratch_name("host=h dbname=app user=u") == "app_bench"
    with pytest.raises(bench.BenchError, match="would be dropped"):
        bench.scratch_name("postgresql://u@h/app", "app")
    url = bench.database_url("postgresql://u:pw@/app?host=%2Ftmp", "app_bench")
    assert url == "postgresql://u:pw@/app_bench?host=%2Ftmp"
    assert "dbname=app_bench" in bench.database_url("host=h dbname=app", "app_bench")


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(bench.BenchError, match="only: unknown scenario nope"):
        bench.BenchConfig(only=("nope",)).validate()
