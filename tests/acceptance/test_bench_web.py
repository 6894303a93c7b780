"""`jobqueue bench --only web --quick`: the web scenario runs end to end and reports its four
figures (a real `jobqueue serve` subprocess as jobqueue_web, real HTTP clients).

A smoke test of the harness so that the scenario cannot rot (no timed assertions): every POST
answered 201 (the client processes raise otherwise), and the figures are present.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web scenario needs the web extra: pip install 'jobqueue[web]'")
pytestmark = pytest.mark.timeout(300)


def test_quick_web_bench(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JOBQUEUE_DATABASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "jobqueue", "--database-url", db_url, "bench", "--quick", "--no-progress",
         "--only", "web", "--json", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=280, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["scenarios"]["web"]["rows"]}
    assert set(rows) == {"web.list", "web.list_total", "web.enqueue_reference", "web.post"}
    for key in ("web.list", "web.list_total"):
        extra = rows[key]["extra"]
        assert extra["samples"] == 80 and extra["rows"] == 50_000, extra
        assert extra["p50_ms"] is not None and extra["p99_ms"] is not None, extra
    for key in ("web.enqueue_reference", "web.post"):
        assert rows[key]["jobs"] == 1_000 and rows[key]["processes"] == 4 and rows[key]["rate"] > 0, rows[key]
    assert rows["web.post"]["baseline"] == "web.enqueue_reference" and rows["web.post"]["ratio"] > 0
    # the two ran by turns, 4 rounds of 250 jobs each
    ratios = rows["web.post"]["extra"]["round_ratios"]
    assert len(ratios) == 4 and all(r > 0 for r in ratios), ratios
    if sys.platform == "linux":  # read from /proc: the serve process's CPU per POST
        assert rows["web.post"]["extra"]["server_cpu_us_per_post"] > 0, rows["web.post"]["extra"]
    assert "HTTP API (jobqueue serve)" in proc.stdout
