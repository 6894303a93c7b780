"""What `jobqueue bench` runs and how big, what a measurement records, and its error.

Sizes and time limits are named constants with their unit; :class:`BenchConfig` refuses
nonsense naming the field; :class:`Row` is one line of the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobqueue.bench import registry
from jobqueue.errors import JobQueueError

PEER_SCENARIOS = ("enqueue", "drain", "latency")
PEERS = ("procrastinate", "pgqueuer")

#: Jobs for the bulk paths (COPY, enqueue_many, claim/drain, history).
JOBS = 50_000
QUICK_JOBS = 300
#: Jobs for the one-transaction-per-job paths (INSERT, enqueue).
SINGLE_JOBS = 10_000
QUICK_SINGLE_JOBS = 120
#: Rows per COPY / enqueue_many call (N is loaded in calls of this size, so that a run out
#: of time can stop between calls).
BULK_CHUNK = 10_000
CLAIM_BATCH = 100
HISTORY_ROWS = 1_000_000
QUICK_HISTORY_ROWS = 5_000
HISTORY_CHUNK = 100_000
LATENCY_RATES = (50, 500)
LATENCY_SECONDS = 10.0
QUICK_LATENCY_SECONDS = 1.0
#: Producer threads that share the paced enqueues of the latency scenario.
LATENCY_PRODUCERS = 4
#: How long a latency job may take to show up before it counts as missing.
LATENCY_GRACE_S = 10.0
#: Jobs per cost measurement (single paths, batched paths).
COST_SINGLE_JOBS = 2_000
COST_BATCH_JOBS = 10_000
QUICK_COST_SINGLE_JOBS = 60
QUICK_COST_BATCH_JOBS = 300
#: enqueue_many below jobqueue.client.COPY_THRESHOLD: one JSON array per call.
JSON_BATCH = 100
#: enqueue_many calls on one handle in the cost of its COPY path (>= COPY_THRESHOLD jobs each).
COPY_CALLS = 5
PRODUCER_PROCESSES = (1, 4)
DRAIN_PROCESSES = (1, 2)
#: Worker concurrency for the drain (jobs held at once; also the largest claim batch).
#: Measured on a 2-core machine: see docs/performance.md.
DRAIN_CONCURRENCY = 250
MAX_SECONDS = 120.0
#: A measurement always gets at least this long, even when the scenario budget is spent.
MIN_PHASE_S = 1.0
PROGRESS_POLL_S = 0.25
START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 30.0
QUIET_TIMEOUT_S = 15.0
PEER_TIMEOUT_S = 900.0
#: Tables printed to a file or a pipe get this many columns (rich assumes 80).
TABLE_WIDTH = 160


class BenchError(JobQueueError):
    """The benchmark could not run."""


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What to run and how big. ``validate()`` refuses nonsense, naming the field."""

    quick: bool = False
    only: tuple[str, ...] = field(default_factory=registry.names)
    max_seconds: float = MAX_SECONDS
    jobs: int | None = None
    single_jobs: int | None = None
    drain_concurrency: tuple[int, ...] = (DRAIN_CONCURRENCY,)
    scratch_db: str | None = None
    keep: bool = False
    json_path: Path | None = None
    #: A Python with procrastinate and pgqueuer installed (make bench-peers); None: no peers.
    peers_python: str | None = None
    peers: tuple[str, ...] = PEERS
    progress: bool = True
    #: Options of the on-demand scenarios (e.g. overload: duration_s, backlog_jobs, rate, factor).
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> BenchConfig:
        scenarios = registry.known()
        unknown = [name for name in self.only if name not in scenarios]
        if unknown or not self.only:
            raise BenchError(
                f"only: unknown scenario {', '.join(unknown) or '(none)'}; choose from {', '.join(scenarios)}"
            )
        if not 1 <= self.max_seconds <= 86_400:
            raise BenchError("max_seconds: must be between 1 and 86400")
        for name in ("jobs", "single_jobs"):
            value = getattr(self, name)
            if value is not None and not 10 <= value <= 10_000_000:
                raise BenchError(f"{name}: must be between 10 and 10000000")
        if not self.drain_concurrency or not all(1 <= c <= 10_000 for c in self.drain_concurrency):
            raise BenchError("drain_concurrency: each must be between 1 and 10000")
        unknown_peers = [p for p in self.peers if p not in PEERS]
        if unknown_peers:
            raise BenchError(f"peers: unknown peer {', '.join(unknown_peers)}; choose from {', '.join(PEERS)}")
        return self

    @property
    def n(self) -> int:
        return self.jobs or (QUICK_JOBS if self.quick else JOBS)

    @property
    def single_n(self) -> int:
        return self.single_jobs or (QUICK_SINGLE_JOBS if self.quick else SINGLE_JOBS)

    @property
    def history_rows(self) -> int:
        return QUICK_HISTORY_ROWS if self.quick else HISTORY_ROWS

    @property
    def latency_seconds(self) -> float:
        return QUICK_LATENCY_SECONDS if self.quick else LATENCY_SECONDS

    @property
    def cost_single_n(self) -> int:
        return QUICK_COST_SINGLE_JOBS if self.quick else COST_SINGLE_JOBS

    @property
    def cost_batch_n(self) -> int:
        return QUICK_COST_BATCH_JOBS if self.quick else COST_BATCH_JOBS

    @property
    def best_concurrency(self) -> int:
        return self.drain_concurrency[0]


# -- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One measurement: a rate (jobs per second) and whatever else it found."""

    scenario: str
    key: str
    label: str
    system: str
    processes: int
    jobs: int
    planned: int
    seconds: float
    rate: float
    partial: bool = False
    baseline: str | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measured:
    jobs: int
    seconds: float
    partial: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


#: jobqueue row -> the baseline row it is compared with, and the ratio the issue asks for.
RATIO_TARGETS: dict[str, float] = {
    "enqueue.many": 0.50,
    "enqueue.single.p1": 0.80,
    "drain.p1": 0.35,
    "history.retained": 0.90,
}
LATENCY_TARGETS_MS = {50: (3.0, 10.0)}  # rate -> (p50, p99)
COST_TARGET_XACTS = 3.0
PEER_TARGETS = {("drain.p1", "pgqueuer"): 5.0, ("drain.p1", "procrastinate"): 20.0}


class Budget:
    """A scenario's time budget, shared fairly among its remaining measurements."""

    def __init__(self, seconds: float, phases: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.left = max(phases, 1)

    def phase(self) -> float:
        """The monotonic deadline of the next measurement."""
        now = time.monotonic()
        share = max(self.deadline - now, 0.0) / max(self.left, 1)
        self.left = max(self.left - 1, 1)
        return now + max(share, MIN_PHASE_S)


def parse_only(text: str | None) -> tuple[str, ...]:
    if not text:
        return registry.names()
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def parse_ints(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if not text:
        return default
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise BenchError(f"drain_concurrency: {text!r} is not a comma-separated list of numbers") from exc
