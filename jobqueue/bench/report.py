"""What the bench prints (rich tables) and writes (the JSON document)."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import psycopg

from jobqueue.bench import registry
from jobqueue.bench.config import PEERS, Row
from jobqueue.bench.core import Bench
from jobqueue.config import redact


def server_info(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'shared_preload_libraries')"
            ).fetchall()
        )
    return {"version": version[0] if version else None, "settings": settings}


def report(bench: Bench, started: datetime, server: dict[str, Any]) -> dict[str, Any]:
    config = bench.config
    scenarios: dict[str, Any] = {}
    for name in config.only:
        rows = [asdict(r) for r in bench.rows if r.scenario == name]
        scenarios[name] = {"rows": rows, "seconds": bench.timings.get(name), "error": bench.errors.get(name)}
    return {
        "version": 1,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "rates are noisy on a shared machine; ratios are measured in the same run",
        },
        "server": {"url": redact(bench.target.url), "scratch_database": bench.scratch.name, **server},
        "counting": {
            "transactions": "pg_stat_database.xact_commit + xact_rollback deltas of the scratch database "
            "(every transaction, read-only and empty ones too); xids: pg_snapshot_xmax(pg_current_snapshot()) "
            "deltas (write transactions, server-wide)",
            "wal": "pg_current_wal_lsn() deltas (server-wide)",
            "statements": "pg_stat_statements calls"
            if bench.scratch.statements
            else "pg_stat_statements is not loadable (not in shared_preload_libraries): calls of the jobqueue "
            "SQL functions from pg_stat_user_functions (track_functions = all on the scratch database) instead",
        },
        "config": {
            "quick": config.quick,
            "jobs": config.n,
            "single_jobs": config.single_n,
            "max_seconds": config.max_seconds,
            "drain_concurrency": list(config.drain_concurrency),
            "history_rows": config.history_rows,
            "latency_seconds": config.latency_seconds,
            "peers": list(config.peers) if config.peers_python else [],
        },
        "scenarios": scenarios,
    }


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    return f"{row.ratio:.0%}" if row.system == "jobqueue" else f"{row.ratio:.2f}x"


def _fmt_target(row: Row) -> str:
    if row.target is None:
        return ""
    mark = "[green]met[/]" if row.met else "[red]missed[/]"
    return f"{row.target} {mark}"


def print_tables(bench: Bench, console: Any) -> None:
    from rich.table import Table

    rows = [r for r in bench.rows if r.system in ("baseline", "jobqueue")]
    throughput = [r for r in rows if r.scenario in ("baseline", "enqueue", "drain", "history", "counters")]
    if throughput:
        table = Table(title="Throughput (jobs/s; ratio = jobqueue / baseline row, same run)", title_justify="left")
        for heading in ("scenario", "case", "procs", "jobs", "seconds", "jobs/s", "vs", "ratio", "target"):
            table.add_column(
                heading, justify="right" if heading in ("procs", "jobs", "seconds", "jobs/s", "ratio") else "left"
            )
        for r in throughput:
            partial = " [yellow](partial)[/]" if r.partial else ""
            table.add_row(
                r.scenario,
                r.label + partial,
                str(r.processes),
                f"{r.jobs:,}",
                f"{r.seconds:.2f}",
                _fmt_rate(r.rate),
                r.baseline or "",
                _fmt_ratio(r),
                _fmt_target(r),
            )
        console.print(table)
    latency = [r for r in rows if r.scenario == "latency"]
    if latency:
        table = Table(title="Wake-up latency: enqueue commit -> handler start (ms)", title_justify="left")
        for heading in ("rate asked", "sent", "achieved/s", "p50", "p95", "p99", "max", "missing", "target"):
            table.add_column(heading, justify="left" if heading == "target" else "right")
        for r in latency:
            e = r.extra
            table.add_row(
                f"{e.get('rate_asked')}/s",
                f"{r.jobs:,}",
                _fmt_rate(r.rate),
                *(str(e.get(k, "-")) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "missing")),
                _fmt_target(r),
            )
        console.print(table)
    cost = [r for r in rows if r.scenario == "cost"]
    if cost:
        statements = "stmts/job" if bench.scratch.statements else "API calls/job"
        table = Table(
            title="Cost per job (xacts: pg_stat_database of the scratch db; xids, WAL: server-wide)",
            title_justify="left",
        )
        for heading in ("path", "jobs", "jobs/batch", "xacts/job", "xacts/batch", "xids/job", "WAL B/job", statements):
            table.add_column(heading, justify="left" if heading == "path" else "right")
        for r in cost:
            e = r.extra
            table.add_row(
                f"{r.system}: {r.label}",
                f"{r.jobs:,}",
                f"{e.get('jobs_per_batch', '-'):,}",
                str(e.get("xacts_per_job", "-")),
                str(e.get("xacts_per_batch", "-")),
                str(e.get("xids_per_job", "-")),
                f"{e.get('wal_bytes_per_job', 0):,.0f}",
                str(e.get("statements_per_job", e.get("api_calls_per_job", "-"))),
            )
        console.print(table)
    peer_rows = [r for r in bench.rows if r.system in PEERS]
    if peer_rows:
        peers = [p for p in PEERS if any(r.system == p for r in peer_rows)]
        table = Table(title="Peers, same server, same run (ratio = jobqueue / peer)", title_justify="left")
        table.add_column("row")
        table.add_column("procs", justify="right")
        table.add_column("jobqueue", justify="right")
        for peer in peers:
            table.add_column(peer, justify="right")
        for peer in peers:
            table.add_column(f"jq / {peer}", justify="right")
        table.add_column("target")
        keys = list(dict.fromkeys(r.key for r in peer_rows))
        for key in keys:
            mine = bench.row(key)
            theirs = {r.system: r for r in peer_rows if r.key == key}
            if key.startswith("latency."):
                cells = [_latency_cell(mine)] + [_latency_cell(theirs.get(p)) for p in peers]
                ratios = ["-" for _ in peers]
            else:
                cells = [_fmt_rate(mine.rate if mine else None)] + [
                    _fmt_rate(theirs[p].rate if p in theirs else None) for p in peers
                ]
                ratios = [f"{theirs[p].ratio:.2f}x" if p in theirs and theirs[p].ratio else "-" for p in peers]
            targets = "; ".join(f"{p}: {_fmt_target(theirs[p])}" for p in peers if p in theirs and theirs[p].target)
            cut = [p for p in peers if p in theirs and theirs[p].partial]
            note = f" [yellow](partial: {', '.join(cut)})[/]" if cut else ""
            any_row = next(iter(theirs.values()))
            table.add_row(key + note, str(any_row.processes), *cells, *ratios, targets)
        console.print(table)
        console.print("latency cells: p50 / p99 ms; throughput cells: jobs/s")
    for printer in registry.tables():
        printer(bench, console)
    for name, error in bench.errors.items():
        console.print(f"[red]{name}: failed: {error}[/]")


def _latency_cell(row: Row | None) -> str:
    if row is None:
        return "-"
    return f"{row.extra.get('p50_ms', '-')} / {row.extra.get('p99_ms', '-')}"
