"""``jobqueue bench``: parse the options, then hand over to :mod:`jobqueue.bench`.

The benchmark is a subpackage the runtime never imports; this verb imports it only when it
runs, so ``jobqueue --help`` and every other verb start without it.
"""

from __future__ import annotations

import sys

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._params import option


@click.command()
@option("--quick", is_flag=True, help="Tiny N for a smoke test (well under a minute).")
@option(
    "--only",
    metavar="A,B",
    default=None,
    help=(
        "Scenarios: baseline,enqueue,drain,latency,history,cost; "
        "machine, overload, schedules, alerts, web and counters only when named.  "
        "[default: all]"
    ),
)
@option(
    "--max-seconds",
    type=click.FloatRange(1, 86_400),
    default=120.0,
    show_default=True,
    help="Time budget of each scenario; past it, a measurement stops and reports its partial rate.",
)
@option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the results to FILE.")
@option(
    "--jobs",
    type=click.IntRange(10, 10_000_000),
    default=None,
    help="N of the bulk and drain scenarios.  [default: 50000]",
)
@option(
    "--single-jobs",
    type=click.IntRange(10, 10_000_000),
    default=None,
    help="N of the 1-tx-per-job paths.  [default: 10000]",
)
@option(
    "--drain-concurrency",
    metavar="C,C",
    default=None,
    help="Worker -c values to drain with; the first is the reference.",
)
@option(
    "--scratch-db",
    metavar="NAME",
    default=None,
    help="Scratch database, dropped and recreated.  [default: <database>_bench]",
)
@option("--keep", is_flag=True, help="Keep the scratch databases after the run.")
@option(
    "--peers",
    "peers_python",
    metavar="PYTHON",
    default=None,
    help="Also run Procrastinate and PgQueuer (make bench-peers).",
)
@option("--no-progress", is_flag=True, help="No progress bar.")
@option(
    "--duration", type=click.FloatRange(10, 86_400), default=None, help="overload: seconds of overload.  [default: 600]"
)
@option(
    "--backlog-jobs",
    type=click.IntRange(0, 10_000_000),
    default=None,
    help="overload: the backlog drained at the end (0: skip).  [default: 1000000]",
)
@option("--overload-rate", type=click.FloatRange(1, 1_000_000), default=None, help="overload: jobs/s offered.")
@option(
    "--overload-factor",
    type=click.FloatRange(1, 10, min_open=True),
    default=None,
    help="overload: x capacity.  [default: 1.3]",
)
@option(
    "--overload-concurrency", type=click.IntRange(1, 10_000), default=None, help="overload: worker -c.  [default: 32]"
)
@option(
    "--overload-workers",
    type=click.IntRange(1, 64),
    default=None,
    help="overload: worker processes, each -c --overload-concurrency.  [default: 1]",
)
@option(
    "--machine-seconds",
    type=click.FloatRange(10, 86_400),
    default=None,
    help="machine: length of the machine check, in spans of 30 s.  [default: 180]",
)
@pass_context
def bench(
    ctx: Context,
    quick: bool,
    only: str | None,
    max_seconds: float,
    json_path: str | None,
    jobs: int | None,
    single_jobs: int | None,
    drain_concurrency: str | None,
    scratch_db: str | None,
    keep: bool,
    peers_python: str | None,
    no_progress: bool,
    duration: float | None,
    backlog_jobs: int | None,
    overload_rate: float | None,
    overload_factor: float | None,
    overload_concurrency: int | None,
    overload_workers: int | None,
    machine_seconds: float | None,
) -> None:
    """Measure jobqueue against a raw-SQL baseline on the same server, in one run.

    Works in a scratch database (<database>_bench) that it drops and recreates, never on
    real jobs. See docs/performance.md.
    """
    from pathlib import Path

    from jobqueue import bench as bench_module

    config = bench_module.BenchConfig(
        quick=quick,
        only=bench_module.parse_only(only),
        max_seconds=max_seconds,
        jobs=jobs,
        single_jobs=single_jobs,
        drain_concurrency=bench_module.parse_ints(drain_concurrency, bench_module.BenchConfig().drain_concurrency),
        scratch_db=scratch_db,
        keep=keep,
        json_path=Path(json_path) if json_path else None,
        peers_python=peers_python,
        progress=not no_progress,
        extra={
            "duration_s": duration,
            "backlog_jobs": backlog_jobs,
            "rate": overload_rate,
            "factor": overload_factor,
            "concurrency": overload_concurrency,
            "workers": overload_workers,
            "machine_seconds": machine_seconds,
        },
    ).validate()
    sys.exit(bench_module.run(ctx.target(), config))
