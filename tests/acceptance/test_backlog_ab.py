"""bench/backlog_ab.py: two lanes in alternating slots, and its bad inputs.

A smoke test of the script (no timed assertions): tiny lanes, one-second slots; the slots
alternate A B B A, each counts the claim index blocks its claims read, the summary pairs
neighbours, and the lanes' databases are gone afterwards. Bad options are refused before
any database is made, naming the option.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.timeout(240)

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "backlog_ab.py"
LANE_DATABASES = "SELECT count(*) FROM pg_database WHERE datname LIKE 'jqab\\_%%'"


def _run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=200, check=False
    )


def _lane_databases(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(LANE_DATABASES).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("compare", ["vacuum", "backlog"])
def test_two_tiny_lanes_alternate_and_leave_nothing_behind(db_url: str, tmp_path: Path, compare: str) -> None:
    before = _lane_databases(db_url)
    out = tmp_path / "ab.json"
    args = ["--compare", compare, "--large", "3000", "--small", "500", "--rounds", "2", "--slot-s", "1"]
    proc = _run(db_url, *args, "--skip", "0", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    document = json.loads(out.read_text())
    slots, summary = document["slots"], document["summary"]
    assert [s["lane"] for s in slots] == ["A", "B", "B", "A"]
    assert all(s["completed"] > 0 and s["claim_index_blocks_per_job"] > 0 for s in slots), slots
    grow = {"A": 1.0 if compare == "backlog" else 1.3, "B": 1.3}
    for s in slots:  # each lane enqueues what it owes in calls of 128: grow x completed, less under one call
        assert s["completed"] * grow[s["lane"]] - 128 < s["enqueued"] <= s["completed"] * grow[s["lane"]], s
    assert summary["pairs"] == 2 and set(summary["B/A"]) >= {"rate", "claim_index_blocks_per_job"}
    assert summary["config"]["compare"] == compare
    assert _lane_databases(db_url) == before


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--large", "10"], "--large"),
        (["--small", "-1"], "--small"),
        (["--rounds", "1"], "--rounds"),
        (["--grow", "0.5"], "--grow"),
        (["--slot-s", "0"], "--slot-s"),
        (["--compare", "nothing"], "--compare"),
    ],
)
def test_a_bad_option_is_refused_naming_it_before_any_database_is_made(
    db_url: str, args: list[str], option: str
) -> None:
    before = _lane_databases(db_url)
    proc = _run(db_url, *args)
    assert proc.returncode == 2 and option in proc.stderr, proc.stderr
    assert _lane_databases(db_url) == before
