"""`jobqueue bench --only overload` end to end at its smallest size, and its bad options.

A smoke test of the harness (issue 13), not of performance: no timed assertions. The
throughput criterion itself runs in the soak tier (tests/soak/test_overload.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import bench
from jobqueue.bench.overload import PRODUCER_BATCH, PRODUCER_TICK_S, OverloadConfig, Producer
from tests.support.cli import run_cli

pytestmark = pytest.mark.timeout(280)

PHASES = {"capacity", "overload", "recovery", "reference", "backlog"}


def _bench(db_url: str, tmp_path: Path, *args: str, timeout: float = 260) -> subprocess.CompletedProcess[str]:
    return run_cli("bench", "--no-progress", *args, database_url=db_url, cwd=tmp_path, timeout=timeout)


def test_overload_run_writes_windows_json_and_png(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = _bench(
        db_url, tmp_path, "--only", "overload", "--quick", "--duration", "10", "--backlog-jobs", "2000",
        "--overload-concurrency", "8", "--overload-workers", "2", "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the verdict is printed, not only written
    assert "Overload (moving average" in proc.stdout and "lowest / the run's peak" in proc.stdout, proc.stdout
    document = json.loads(out.read_text())
    row = document["scenarios"]["overload"]["rows"][0]
    assert document["scenarios"]["overload"]["error"] is None
    detail: dict[str, Any] = json.loads(Path(row["extra"]["json"]).read_text())
    assert Path(row["extra"]["json"]) == tmp_path / "run.overload.json"
    png = Path(row["extra"]["png"])
    assert png == tmp_path / "run.overload.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert detail["config"]["workers"] == 2 and detail["config"]["concurrency"] == 8
    windows = detail["windows"]
    # Only the overload lasts a fixed time (--duration 10: five 2 s windows with --quick); the drains may
    # end within one window on a fast machine, so their windows are not required.
    phases = {w["phase"] for w in windows}
    assert "overload" in phases and phases <= PHASES | {"reference-load", "backlog-load", "recovered", "idle", "done"}
    for w in windows:
        assert w["enqueue_rate"] >= 0 and w["completion_rate"] >= 0 and w["backlog"] >= 0
        assert "n_dead_tup" in w["table"] and "autovacuum_count" in w["table"]
        assert "job_claim_idx" in w["indexes"]
        assert w["explain"] is None or "error" not in w["explain"], w["explain"]
    assert any(w["explain"] and "job_claim_idx" in w["explain"]["plan"] for w in windows)
    # where the cores went (bench/cpu.py): the worker process always; its server backends
    # when the server runs on this machine
    busy = [w["cpu"] for w in windows if w["phase"] == "overload" and w["cpu"]]
    assert busy and all(c["worker"] > 0 and 0 < c["machine_busy"] <= c["machine_cores"] * 1.05 for c in busy), busy
    # how fast the machine was (the speed probe), and what its hypervisor took
    assert all(c["probe_us"] > 0 and 0 <= c["machine_steal"] <= c["machine_busy"] for c in busy), busy
    # the server's WAL in each window: the overload writes some in every one
    wal = [w["wal"] for w in windows if w["phase"] == "overload"]
    assert all(x and x["records"] > 0 and x["mb"] > 0 and x["checkpoints"] >= 0 for x in wal), wal
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        local = Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    if local:
        assert all(c["pg_worker"] > 0 for c in busy), busy
        assert any(c["pg_producer"] > 0 for c in busy), busy
    # every offered job was enqueued and, by the end, completed exactly once
    summary = detail["summary"]
    assert summary["capacity"]["jobs"] > 0 and summary["offered_overload"] > summary["capacity"]["rate"]
    assert {"met_overload", "met_recovery", "peak_rate_smoothed", "recovery_drain_rate"} <= set(summary)
    assert summary["overload_peak_rate_smoothed"] <= summary["peak_rate_smoothed"]
    assert 0 < summary["machine_speed_min_over_max"] <= 1 and summary["machine_steal_max_cores"] >= 0
    assert "cores stolen" in proc.stdout, proc.stdout
    assert detail["claim_time_source"] in ("pg_stat_statements", "pg_stat_user_functions")
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{dbname}_bench%",)).fetchall()
        assert left == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"factor": 0.9}, "overload_factor"),
        ({"rate": 0.5}, "overload_rate"),
        ({"duration_s": 5}, "duration"),
        ({"backlog_jobs": -1}, "backlog_jobs"),
        ({"workers": 65}, "overload_workers"),
    ],
)
def test_bad_overload_options_name_the_field(extra: dict[str, Any], field: str) -> None:
    config = bench.BenchConfig(only=("overload",), extra=extra).validate()
    with pytest.raises(bench.BenchError, match=f"^{field}:"):
        OverloadConfig.from_bench(config)


def test_bad_duration_on_the_command_line_touches_nothing(db_url: str, tmp_path: Path) -> None:
    proc = _bench(db_url, tmp_path, "--only", "overload", "--duration", "5", timeout=60)
    assert proc.returncode == 2 and "--duration" in proc.stderr
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname LIKE %s", (f"{dbname}_bench%",)).fetchone() is None
    assert not (tmp_path / "bench-results").exists()


def test_overload_is_run_only_when_named() -> None:
    assert "overload" not in bench.parse_only(None)
    assert bench.BenchConfig(only=("overload",)).validate().only == ("overload",)


class _CountingProducer(Producer):
    """The bench's producer, its enqueue_many calls (real ones) counted."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sizes: list[int] = []
        real = self.jq.enqueue_many

        def counted(jobs: list[dict[str, Any]]) -> Any:
            self.sizes.append(len(jobs))
            return real(jobs)

        self.jq.enqueue_many = counted  # type: ignore[method-assign]


def test_producer_sends_each_ticks_due_in_one_call(db_url: str) -> None:
    """At 3,000 jobs/s and a 10 ms tick the producer sends ~30 jobs a call, however fast a
    call returns (it used to send whatever was due the moment the last call returned: ~3
    jobs a call when a call takes 1 ms). A late tick only makes a call larger, so the mean
    is at least half a tick's worth without timing assumptions."""
    rate = 3000.0
    producer = _CountingProducer(db_url)
    producer.start()
    producer.set_rate(rate)
    deadline = time.monotonic() + 30
    while producer.sent < 3000 and producer.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    producer.stop()
    assert producer.error is None
    sizes = producer.sizes[1:-1]  # the first and last ticks are partial
    assert sizes and max(sizes) <= PRODUCER_BATCH
    assert sum(sizes) / len(sizes) >= 0.5 * rate * PRODUCER_TICK_S, sizes
