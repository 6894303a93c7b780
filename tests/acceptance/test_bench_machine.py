"""`jobqueue bench --only machine`: the machine's own speed per span, and its bad inputs.

A smoke test of the harness (no timed assertions): the row and its table are there; a length
that holds fewer than two spans is refused, naming the option.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.support.cli import run_cli

pytestmark = pytest.mark.timeout(180)


def _bench(db_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("bench", "--no-progress", "--only", "machine", *args, database_url=db_url, cwd=cwd, timeout=160)


def test_quick_machine_check(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _bench(db_url, tmp_path, "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["scenarios"]["machine"]["rows"]
    s = row["extra"]
    assert row["key"] == "machine" and row["met"] == (s["slowest_over_fastest"] >= 0.9)
    assert s["spans"] == 4 and len(s["round_trips_per_s"]) == 4
    assert set(s["cores"]) == {str(c) for c in sorted(os.sched_getaffinity(0))}
    assert "The machine alone" in proc.stdout and "the machine (the lower)" in proc.stdout


def test_a_check_shorter_than_two_spans_is_refused_naming_the_option(db_url: str, tmp_path: Path) -> None:
    proc = _bench(db_url, tmp_path, "--machine-seconds", "5")
    assert proc.returncode == 2 and "--machine-seconds" in proc.stderr
    proc = _bench(db_url, tmp_path, "--machine-seconds", "45", "--json", str(tmp_path / "b.json"))
    assert proc.returncode == 1 and "machine_seconds: at least 60" in proc.stdout + proc.stderr
    scenario = json.loads((tmp_path / "b.json").read_text())["scenarios"]["machine"]
    assert scenario["rows"] == [] and "machine_seconds" in scenario["error"]
    # nothing left behind: the scratch databases are gone, no results folder was written
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname LIKE %s", (f"{dbname}_bench%",)).fetchone() is None
    assert not (tmp_path / "bench-results").exists()
