"""Tracing (extra ``otel``): a real OpenTelemetry SDK with its in-memory span exporter.

The enqueue inside a request's span makes a PRODUCER span whose W3C context travels in the
job's metadata; the worker's run is a CONSUMER span in the same trace, child of and linked
to it; attributes follow the messaging semantic conventions. Without the extra (the
``opentelemetry`` package unimportable, in a subprocess) the library works and writes no
trace context.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue
from jobqueue.config import WorkerConfig
from tests.conftest import ROOT

trace = pytest.importorskip("opentelemetry.trace", reason="the otel extra is not installed")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.util._once import Once  # noqa: E402


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A real SDK provider exporting to memory, installed globally for this test only."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    # back to the default no-op provider, as OpenTelemetry's own test helpers reset it, so that
    # later tests in this process enqueue without tracing
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def jq(db_url: str) -> Iterator[JobQueue]:
    queue = JobQueue(db_url, pool_size=4)
    yield queue
    queue.close()


def drain(jq: JobQueue) -> None:
    config = WorkerConfig(
        queues=("mail", "default"),
        burst=True,
        install_signal_handlers=False,
        poll_interval_s=0.05,
        reconcile_interval_s=0,
    )
    assert jq.run_worker(config) == 0


def test_a_run_joins_the_trace_of_the_request_that_enqueued_it(
    jq: JobQueue, db: psycopg.Connection[Any], spans: InMemorySpanExporter
) -> None:
    ran: list[int] = []

    @jq.task(name="mail.send", queue="mail")
    def send(to: str) -> None:
        ran.append(1)

    @jq.task(name="mail.bounce", queue="mail")
    def bounce() -> None:
        raise ValueError("mailbox full")

    tracer = trace.get_tracer("the-web-app")
    with tracer.start_as_current_span("POST /signup") as request:
        job_id = jq.enqueue("mail.send", {"to": "a@example.com"}, queue="mail")
    batch = jq.enqueue_many([{"type": "mail.send", "payload": {"to": "b"}, "queue": "mail"}] * 3)
    failing = jq.enqueue("mail.bounce", queue="mail", max_attempts=1)
    metadata = db.execute("SELECT metadata FROM jobqueue.job WHERE id = %s", [job_id]).fetchone()["metadata"]  # type: ignore[index]
    assert set(metadata) == {"traceparent"}
    assert metadata["traceparent"].split("-")[1] == format(request.get_span_context().trace_id, "032x")

    drain(jq)
    assert len(ran) == 4
    finished = spans.get_finished_spans()
    producers = [s for s in finished if s.kind == trace.SpanKind.PRODUCER]
    consumers = {s.attributes["messaging.message.id"]: s for s in finished if s.kind == trace.SpanKind.CONSUMER}
    assert len(producers) == 3

    single = next(s for s in producers if s.attributes.get("messaging.message.id") == str(job_id))
    assert single.name == "enqueue mail" and single.parent.span_id == request.get_span_context().span_id
    assert dict(single.attributes) == {
        "messaging.system": "jobqueue",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": "mail",
        "messaging.message.id": str(job_id),
    }
    run = consumers[str(job_id)]
    assert run.name == "process mail"
    assert run.context.trace_id == request.get_span_context().trace_id  # the same trace
    assert run.parent.span_id == single.context.span_id
    assert [link.context.span_id for link in run.links] == [single.context.span_id]
    assert run.attributes["messaging.operation.type"] == "process"
    assert run.attributes["messaging.destination.name"] == "mail"
    assert run.attributes["jobqueue.job.type"] == "mail.send" and run.attributes["jobqueue.job.attempt"] == 1
    assert run.status.status_code == trace.StatusCode.UNSET

    many = next(s for s in producers if s.attributes.get("messaging.batch.message_count") == 3)
    for i in batch:
        assert consumers[str(i)].parent.span_id == many.context.span_id
    failed = consumers[str(failing)]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


def test_a_caller_traceparent_is_kept_and_bad_metadata_still_names_the_field(
    jq: JobQueue, db: psycopg.Connection[Any], spans: InMemorySpanExporter
) -> None:
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    job_id = jq.enqueue("t", metadata={"traceparent": own, "k": 1})
    row = db.execute("SELECT metadata FROM jobqueue.job WHERE id = %s", [job_id]).fetchone()
    assert row is not None and row["metadata"] == {"traceparent": own, "k": 1}
    from jobqueue.errors import InvalidInput

    with pytest.raises(InvalidInput, match="metadata"):
        jq.enqueue("t", metadata=["not", "an", "object"])
    with pytest.raises(InvalidInput, match=r"jobs\[1\]: must be a mapping"):
        jq.enqueue_many([{"type": "t"}, "not a job"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match=r"jobs\[0\]: must be a mapping"):
        jq.enqueue_many([None])  # type: ignore[list-item]
    assert db.execute("SELECT count(*) AS n FROM jobqueue.job").fetchone()["n"] == 1  # type: ignore[index]


def test_without_the_extra_the_library_works_and_writes_no_context(db_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        from jobqueue import JobQueue, tracing
        from jobqueue.config import WorkerConfig
        assert not tracing.available()
        jq = JobQueue({db_url!r})
        ran = []
        jq.task(name="t")(lambda: ran.append(1))
        job_id = jq.enqueue("t")
        jq.enqueue_many([{{"type": "t"}}] * 2)
        with jq.pool.connection() as conn:
            row = conn.execute("SELECT metadata FROM jobqueue.job WHERE id = %s", [job_id]).fetchone()
            assert row["metadata"] is None
        cfg = WorkerConfig(burst=True, install_signal_handlers=False, poll_interval_s=0.05, reconcile_interval_s=0)
        assert jq.run_worker(cfg) == 0
        assert ran == [1, 1, 1], ran
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
