"""Prometheus metrics of the queue, read from the database at each scrape (`jobqueue exporter`).

Every scrape calls two public SQL functions, ``jobqueue.queue_stats()`` and
``jobqueue.health()``, so the figures are the database's, whichever worker or producer made
them, and an exporter holds no state worth losing. Labels are queue names and health check
names only: never a payload, an error text or a job id (SEC-06).

Metrics:

* ``jobqueue_up``: 1 when this scrape could read the database, else 0 (and nothing else)
* ``jobqueue_jobs{queue, state}``: live jobs; state ``pending`` (runnable now), ``scheduled``
  (run_at ahead), ``retrying``, ``processing``
* ``jobqueue_dead_letters{queue}``, ``jobqueue_oldest_pending_age_seconds{queue}``,
  ``jobqueue_queue_paused{queue}``
* ``jobqueue_health_value{check}``, ``jobqueue_health_threshold{check}`` (absent while a check
  is off), ``jobqueue_health_alert{check}``: the rows of ``jobqueue.health()``
* ``jobqueue_jobs_{enqueued,completed,failed,retried,dead_lettered,cancelled}_total{queue, type}``:
  counters the database keeps (``jobqueue.counters()``), monotonic across history pruning,
  reconcile and database restarts. ``failed`` counts failed attempts (retried or
  dead-lettered from a run); a redriven dead letter counts as enqueued again.
* ``jobqueue_job_queue_time_seconds{queue, type}`` (histogram): how long each completed job's
  successful attempt waited, once due, for a worker (``claimed_at - run_at``);
  ``jobqueue_job_run_time_seconds{queue, type}`` (histogram): ``finished_at - claimed_at``.
  Buckets: ``jobqueue.histogram_buckets()``.
* ``jobqueue_jobs_running{queue, type}``: jobs processing now
* ``jobqueue_workers{status}``: registered workers not stopped, by status (healthy, degraded,
  unhealthy); ``jobqueue_worker_slots`` (their concurrency, summed),
  ``jobqueue_worker_busy_slots`` (jobs they run now) and ``jobqueue_worker_utilization_ratio``
  (busy / slots; absent with no slots)
* ``jobqueue_alerts_open{rule, severity}``: open alert incidents (firing or acknowledged);
  present only when the schema has the ``jobqueue.alerts`` view
* ``jobqueue_scrape_duration_seconds``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jobqueue.errors import ConfigurationError, JobQueueError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from jobqueue.client import JobQueue

#: The port `jobqueue exporter` listens on unless told otherwise.
DEFAULT_PORT = 9544
#: A scrape gives up on the database after this long (Prometheus' own timeout is 10 s).
SCRAPE_DB_TIMEOUT_S = 5.0
JOB_STATES = ("pending", "scheduled", "retrying", "processing")
#: The counters of jobqueue.counters(), each exported as jobqueue_jobs_<name>_total.
COUNTERS = {
    "enqueued": "Jobs enqueued (a redriven dead letter counts again)",
    "completed": "Jobs completed",
    "failed": "Failed attempts (then retried or dead-lettered)",
    "retried": "Failed attempts that were retried",
    "dead_lettered": "Jobs dead-lettered",
    "cancelled": "Jobs cancelled",
}
WORKER_STATUSES = ("healthy", "degraded", "unhealthy")

log = logging.getLogger("jobqueue.exporter")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:  # the optional extra is not installed
        raise ConfigurationError("the exporter needs prometheus-client: pip install 'jobqueue[prometheus]'") from exc
    return prometheus_client


class QueueCollector:
    """A prometheus_client collector that reads the queue's state from the database."""

    def __init__(self, jq: JobQueue) -> None:
        self.jq = jq

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration: the metric set follows the database

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        started = time.monotonic()
        up = GaugeMetricFamily("jobqueue_up", "1 when this scrape could read the jobqueue database")
        try:
            stats = self.jq.stats()
            health = self.jq.health()
            # read into locals: the HTTP server may run two scrapes of this collector at once
            counter_rows = self.jq.counters()
            bounds = self.jq.histogram_buckets()
            worker_rows = self.jq.workers()
            alert_rows = self.jq.open_alerts()
        except JobQueueError as exc:
            log.warning("scrape failed", extra={"action": "scrape_failed", "error": str(exc).splitlines()[0]})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        jobs = GaugeMetricFamily("jobqueue_jobs", "Live jobs by queue and state", labels=["queue", "state"])
        dead = GaugeMetricFamily("jobqueue_dead_letters", "Jobs in the dead-letter queue", labels=["queue"])
        oldest = GaugeMetricFamily(
            "jobqueue_oldest_pending_age_seconds", "Age of the oldest job runnable now (0: none)", labels=["queue"]
        )
        paused = GaugeMetricFamily("jobqueue_queue_paused", "1 while the queue is paused", labels=["queue"])
        for row in stats:
            queue = str(row["queue"])
            for state in JOB_STATES:
                jobs.add_metric([queue, state], float(row[state]))
            dead.add_metric([queue], float(row["dead_letters"]))
            oldest.add_metric([queue], float(row["oldest_pending_age_s"]))
            paused.add_metric([queue], 1.0 if row["paused"] else 0.0)
        yield from (jobs, dead, oldest, paused)

        value = GaugeMetricFamily("jobqueue_health_value", "Value of a jobqueue.health() check", labels=["check"])
        threshold = GaugeMetricFamily(
            "jobqueue_health_threshold", "Threshold of a jobqueue.health() check (absent: off)", labels=["check"]
        )
        alert = GaugeMetricFamily("jobqueue_health_alert", "1 while a jobqueue.health() check alerts", labels=["check"])
        for row in health:
            check = str(row["check_name"])
            if row["value"] is not None:  # reconcile_last_run_age_s before reconcile ever ran
                value.add_metric([check], float(row["value"]))
            if row["threshold"] is not None:
                threshold.add_metric([check], float(row["threshold"]))
            alert.add_metric([check], 1.0 if row["alert"] else 0.0)
        yield from (value, threshold, alert)
        yield from _counters(counter_rows, bounds)
        yield from _workers(worker_rows)
        yield from _alerts(alert_rows)

        duration = GaugeMetricFamily("jobqueue_scrape_duration_seconds", "Time this scrape spent in the database")
        duration.add_metric([], time.monotonic() - started)
        yield duration


def _counters(rows: list[dict[str, Any]], bounds: list[float]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    labels = ["queue", "type"]
    families = {
        name: CounterMetricFamily(f"jobqueue_jobs_{name}", text, labels=labels) for name, text in COUNTERS.items()
    }
    running = GaugeMetricFamily("jobqueue_jobs_running", "Jobs processing now", labels=labels)
    queue_time = HistogramMetricFamily(
        "jobqueue_job_queue_time_seconds",
        "Time a completed job waited, once due, for a worker (claimed_at - run_at)",
        labels=labels,
    )
    run_time = HistogramMetricFamily(
        "jobqueue_job_run_time_seconds", "Run time of completed jobs (finished_at - claimed_at)", labels=labels
    )
    for row in rows:
        key = [str(row["queue"]), str(row["type"])]
        for name, family in families.items():
            family.add_metric(key, float(row[name]))
        running.add_metric(key, float(row["running"]))
        queue_time.add_metric(key, *_histogram(bounds, row["queue_time_buckets"], row["queue_time_sum"]))
        run_time.add_metric(key, *_histogram(bounds, row["run_time_buckets"], row["run_time_sum"]))
    yield from families.values()
    yield from (running, queue_time, run_time)


def _workers(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    workers = GaugeMetricFamily("jobqueue_workers", "Registered workers not stopped, by status", labels=["status"])
    live = [w for w in rows if w["stopped_at"] is None]
    for status in WORKER_STATUSES:
        workers.add_metric([status], float(sum(1 for w in live if w["status"] == status)))
    slots = sum(int(w["concurrency"] or 0) for w in live)
    busy = sum(int(w["running"] or 0) for w in live)
    slots_family = GaugeMetricFamily("jobqueue_worker_slots", "Job slots of live workers (their concurrency)")
    slots_family.add_metric([], float(slots))
    busy_family = GaugeMetricFamily("jobqueue_worker_busy_slots", "Jobs live workers are running now")
    busy_family.add_metric([], float(busy))
    yield from (workers, slots_family, busy_family)
    if slots:
        ratio = GaugeMetricFamily("jobqueue_worker_utilization_ratio", "Busy slots / slots of live workers")
        ratio.add_metric([], busy / slots)
        yield ratio


def _alerts(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    if not rows:
        return
    family = GaugeMetricFamily(
        "jobqueue_alerts_open", "Open alert incidents (firing or acknowledged)", labels=["rule", "severity"]
    )
    for row in rows:
        family.add_metric([str(row["rule"]), str(row["severity"])], float(row["n"]))
    yield family


def _histogram(bounds: list[float], per_bucket: list[int], total: float) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets (cumulative, ending with +Inf) from per-bucket counts, and the sum."""
    cumulative, buckets = 0, []
    for bound, count in zip([*bounds, float("inf")], per_bucket, strict=True):
        cumulative += int(count)
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
    return buckets, float(total)


def registry(jq: JobQueue) -> Any:
    """A fresh prometheus_client registry holding only the queue collector."""
    prometheus = _prometheus()
    reg = prometheus.CollectorRegistry(auto_describe=False)
    reg.register(QueueCollector(jq))
    return reg


def render(jq: JobQueue) -> str:
    """One scrape, as the Prometheus text format (what GET /metrics answers)."""
    prometheus = _prometheus()
    return str(prometheus.generate_latest(registry(jq)).decode())


def serve(jq: JobQueue, host: str, port: int) -> Any:
    """Serve /metrics on host:port from a background thread; returns the HTTP server."""
    prometheus = _prometheus()
    try:
        server, _thread = prometheus.start_http_server(port, addr=host, registry=registry(jq))
    except OSError as exc:
        raise ConfigurationError(f"port: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return server
