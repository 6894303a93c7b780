"""`jobqueue bench`: jobqueue against a raw-SQL baseline, on one server, in one run.

Everything runs in a scratch database on the server the bench is pointed at
(``<database>_bench``, cloned for every measurement from ``<database>_bench_template``,
which is migrated with :func:`jobqueue.migrations.upgrade`), so real jobs are never touched.
Both are dropped and recreated per run (and dropped at the end unless ``--keep``).

Scenarios (each bounded by ``--max-seconds``: a measurement that runs out of time stops
early and reports the rate it reached, marked partial):

baseline  the least work a queue can do, in plain psycopg on a plain table: COPY N rows;
          one INSERT (with a NOTIFY) per transaction, 1 and 4 processes; claim 100 rows
          with a SKIP LOCKED CTE and delete them, 1 and 2 processes
enqueue   JobQueue.enqueue_many (its COPY path); JobQueue.enqueue, one transaction per job,
          1 and 4 producer processes
drain     N no-op jobs drained by real `jobqueue worker --burst` processes, 1 and 2
latency   an idle worker; jobs enqueued one by one at 50/s and 500/s; commit -> handler start
history   drain with 1,000,000 finished jobs retained in jobqueue.job_history vs none
cost      transactions, xids, WAL bytes and statements per job, single and batched paths
counters  (only with --only) the drain with the counter triggers off, then on, alternating
machine   (only with --only) this machine's own speed per 30 s span, nothing of jobqueue
          running: whether the overload's 90 % floor over 30 s is reachable here at all

Every jobqueue row carries its ratio to the matching baseline row, measured in the same run
on the same server. Processes, never threads, stand for "processes" (the GIL). ``--peers
PYTHON`` also runs the same enqueue, drain and latency workloads on Procrastinate and
PgQueuer through the drivers in ``bench/peers/`` (``make bench-peers``).

Measurement only: the runtime (``import jobqueue``, ``jobqueue worker``) never imports this
package; the CLI imports it inside ``jobqueue bench``. The modules, each owning one thing:

config       sizes, limits and targets; BenchConfig, Row, Measured, Budget, BenchError
registry     the scenario registry: a new scenario is a new module with ``@scenario(name)``
statements   every statement the bench runs on the server
scratch      the scratch databases
processes    measuring processes (forkserver) and real ``jobqueue worker`` processes
core         Bench: progress, rows and the loaders and measurements scenarios share
throughput   the baseline, enqueue and drain scenarios
latency      the latency scenario;  history, cost: theirs
machine      the machine's own speed per span, no database (only with --only)
overload     throughput while the backlog grows, and the drain after (only with --only)
schedules    periodic schedules: fire lag, exactly once, reconcile cost (only with --only)
alerts       alert detection's cost in reconcile (50 rules over 10 queues), and the time from an
             alert's condition to its notification received (only with --only)
web          the HTTP API: list latency on 1,000,000 jobs, POST /jobs throughput (only with --only)
counters     the drain with the counter triggers off, then on (only with --only)
peers        Procrastinate and PgQueuer through ``bench/peers/``
report       the tables printed and the JSON written
runner       one run: run()
app          the tasks the bench's workers run (``--app jobqueue.bench.app:jq``)
"""

from __future__ import annotations

import importlib

from jobqueue.bench import registry
from jobqueue.bench.config import BenchConfig, BenchError, parse_ints, parse_only
from jobqueue.bench.processes import split
from jobqueue.bench.runner import run
from jobqueue.bench.scratch import database_url, scratch_name

#: The scenario modules, in run order; importing one registers its scenarios.
SCENARIO_MODULES = (
    "throughput",
    "latency",
    "history",
    "cost",
    "machine",
    "overload",
    "schedules",
    "alerts",
    "web",
    "counters",
)
for _module in SCENARIO_MODULES:
    importlib.import_module(f"jobqueue.bench.{_module}")

#: The scenarios a run without ``--only`` runs, in run order (``--only``'s default).
SCENARIOS = registry.names()
#: Run only when named in ``--only`` (their options come in ``BenchConfig.extra``).
ON_DEMAND_SCENARIOS = registry.on_demand()

__all__ = [
    "ON_DEMAND_SCENARIOS",
    "SCENARIOS",
    "BenchConfig",
    "BenchError",
    "database_url",
    "parse_ints",
    "parse_only",
    "run",
    "scratch_name",
    "split",
]
