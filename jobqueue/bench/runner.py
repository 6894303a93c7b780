"""One run of `jobqueue bench`: the scratch template, each selected scenario, the report."""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime

import psycopg

from jobqueue.bench import registry
from jobqueue.bench.config import PEER_SCENARIOS, TABLE_WIDTH, BenchConfig
from jobqueue.bench.core import Bench
from jobqueue.bench.peers import run_peers
from jobqueue.bench.report import print_tables, report, server_info
from jobqueue.config import DatabaseTarget, redact
from jobqueue.errors import JobQueueError


def run(target: DatabaseTarget, config: BenchConfig) -> int:
    """Run the selected scenarios; print the tables; write JSON. Returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    config = config.validate()
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=max(out.width, TABLE_WIDTH))
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    started = datetime.now(UTC)
    server = server_info(target.url)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        disable=not config.progress,
        transient=True,
    )
    bench = Bench(target, config, progress)
    err.print(
        f"bench: {redact(target.url)} (PostgreSQL {server['version']}), scratch database {bench.scratch.name}, "
        f"{os.cpu_count()} CPUs; each scenario stops after {config.max_seconds:g} s"
    )
    try:
        with progress:
            bench.begin("creating the scratch database", None)
            bench.scratch.create_template()
            for name in config.only:
                began = time.monotonic()
                try:
                    registry.step(name)(bench, config.max_seconds)
                    if config.peers_python and name in PEER_SCENARIOS:
                        run_peers(bench, name, config.max_seconds)
                except (JobQueueError, psycopg.Error, OSError) as exc:
                    bench.errors[name] = " ".join(str(exc).split()) or type(exc).__name__
                except Exception as exc:  # a bug here: say where, and go on with the next scenario
                    err.print_exception()
                    bench.errors[name] = f"{type(exc).__name__}: {exc}"
                finally:
                    bench.end()
                bench.timings[name] = round(time.monotonic() - began, 2)
    finally:
        if not config.keep:
            with contextlib.suppress(psycopg.Error):
                bench.scratch.drop_all()
    print_tables(bench, out)
    document = report(bench, started, server)
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        err.print(f"bench: results written to {config.json_path}")
    return 1 if bench.errors else 0
