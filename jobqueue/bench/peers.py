"""Procrastinate and PgQueuer under the same workloads, on the same server, in the same run.

``--peers PYTHON`` runs the drivers in ``bench/peers/`` of the checkout with that Python
(their own virtual environment: ``make bench-peers``) for the scenarios in
:data:`PEER_SCENARIOS`; each peer row carries the ratio jobqueue / peer.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from jobqueue.bench.config import (
    BULK_CHUNK,
    DRAIN_PROCESSES,
    LATENCY_RATES,
    MIN_PHASE_S,
    PEER_TARGETS,
    PEER_TIMEOUT_S,
    PRODUCER_PROCESSES,
    BenchError,
    Budget,
    Measured,
)
from jobqueue.bench.core import Bench
from jobqueue.bench.scratch import _drop_database


def run_peers(bench: Bench, scenario: str, budget_s: float) -> None:
    python = bench.config.peers_python
    if python is None:
        return
    directory = peers_dir()
    n, single = bench.config.n, bench.config.single_n
    for peer in bench.config.peers:
        script = directory / f"{peer}_driver.py"
        cases: list[tuple[str, str, int, dict[str, Any]]] = []
        if scenario == "enqueue":
            cases = [("enqueue.many", "enqueue-many", n, {"jobs": n, "chunk": BULK_CHUNK})]
            cases += [
                (f"enqueue.single.p{p}", "enqueue-single", single, {"jobs": single, "processes": p})
                for p in PRODUCER_PROCESSES
            ]
        elif scenario == "drain":
            cases = [(f"drain.p{p}", "drain", n, {"jobs": n, "processes": p}) for p in DRAIN_PROCESSES]
        elif scenario == "latency":
            seconds = bench.config.latency_seconds
            cases = [
                (f"latency.{r}", "latency", max(int(r * seconds), 1), {"rate": r, "seconds": seconds})
                for r in LATENCY_RATES
            ]
        budget = Budget(budget_s, len(cases))
        for key, command, planned, options in cases:
            bench.begin(f"{scenario}: {peer} {command} {_options_text(options)}", None)
            url = bench.scratch.fresh_database(f"{bench.scratch.name}_{peer}")
            max_seconds = max(budget.phase() - time.monotonic(), MIN_PHASE_S)
            result = run_peer(python, script, command, url, max_seconds, options)
            mine = bench.row(key)
            m = Measured(int(result["jobs"]), float(result["seconds"]), bool(result.get("partial")))
            m.extra = {k: v for k, v in result.items() if k not in ("jobs", "seconds", "partial")}
            row = bench.record(
                scenario, key, mine.label if mine else key, peer, options.get("processes", 1), planned, m
            )
            if mine is not None and row.rate > 0:
                row.baseline = key
                row.ratio = round(mine.rate / row.rate, 3)  # jobqueue / peer
            target = PEER_TARGETS.get((key, peer))
            if target is not None:
                row.target = f"jobqueue >= {target:g}x"
                row.met = row.ratio is not None and row.ratio >= target
            with bench.scratch.admin() as conn:
                _drop_database(conn, f"{bench.scratch.name}_{peer}")


def peers_dir() -> Path:
    """``bench/peers`` of the checkout this package runs from."""
    directory = Path(__file__).resolve().parents[2] / "bench" / "peers"
    if not directory.is_dir():
        raise BenchError("peers: bench/peers/ is not here; run the peer comparison from a jobqueue checkout")
    return directory


def run_peer(python: str, script: Path, command: str, url: str, max_seconds: float, options: dict[str, Any]) -> Any:
    """Run one peer driver command; its last stdout line is a JSON object."""
    args = [python, str(script), command, "--url", url, "--max-seconds", f"{max_seconds:.1f}"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=PEER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{script.stem} {command}: no answer within {PEER_TIMEOUT_S:g} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BenchError(f"{script.stem} {command} exited with {done.returncode}: {tail}")
    return json.loads(lines[-1])


def _options_text(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())
