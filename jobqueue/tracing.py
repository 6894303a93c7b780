"""OpenTelemetry spans for enqueue and for each run, linked through the job (extra ``otel``).

With ``pip install 'jobqueue[otel]'`` and a tracer provider configured by the application
(``opentelemetry.trace.set_tracer_provider``), jobqueue follows the OpenTelemetry messaging
semantic conventions:

* ``enqueue`` / ``enqueue_many``: a PRODUCER span ``enqueue <queue>`` (attributes
  ``messaging.system = "jobqueue"``, ``messaging.destination.name`` = the queue,
  ``messaging.operation.type = "send"``, ``messaging.operation.name = "enqueue"``,
  ``messaging.message.id`` = the job id, or ``messaging.batch.message_count`` for a batch).
  Its context is written into each job's ``metadata`` as W3C Trace Context
  (``metadata["traceparent"]``, and ``metadata["tracestate"]`` when there is one), unless the
  caller already put a ``traceparent`` there.
* each run: a CONSUMER span ``process <queue>`` (``messaging.operation.type = "process"``,
  ``messaging.message.id``, ``jobqueue.job.type``, ``jobqueue.job.attempt``), child of the
  enqueuing span read back from the metadata and linked to it, so the run sits in the trace
  of the request that enqueued it. A handler's exception is recorded and sets the status to
  ERROR.

Without the extra (no ``opentelemetry`` package) every function here is a no-op that costs a
module-level check. With the extra but no tracer provider set (the API's default proxy or its
no-op provider: every span would be non-recording), they are no-ops too, decided by one look
at the global provider per call: starting a non-recording span cost about 8 us per job, on
the enqueue and on the worker's hot path (docs/performance.md, session 3). Nothing is written
into the metadata either way, and enqueue keeps its fast paths.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: The value of ``messaging.system`` on every span.
MESSAGING_SYSTEM = "jobqueue"
#: Metadata keys that carry the W3C Trace Context of the enqueuing span.
CONTEXT_KEYS = ("traceparent", "tracestate")


def _load() -> Any:
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:  # the optional extra is not installed
        return None


_trace = _load()


def available() -> bool:
    """Whether the OpenTelemetry API is installed (the ``otel`` extra)."""
    return _trace is not None


def _tracer() -> Any:
    """jobqueue's tracer, or None when spans could not record: no ``opentelemetry`` package,
    or no tracer provider set (the API's proxy or no-op provider: its spans are non-recording
    and carry no context). Looked up at each call: an application may set its provider after
    importing jobqueue."""
    if _trace is None:
        return None
    provider = _trace.get_tracer_provider()
    if isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer("jobqueue")


class EnqueueSpan:
    """What ``enqueue_span`` yields: ``inject`` adds the trace context to a job's options,
    ``done`` records the ids. Both do nothing when the span is not recording."""

    def __init__(self, span: Any) -> None:
        self._span = span
        self._carrier: dict[str, str] = {}
        if span is not None and span.is_recording():
            from opentelemetry import propagate, trace

            propagate.inject(self._carrier, context=trace.set_span_in_context(span))

    def inject(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """The options with the trace context in ``metadata`` (a new mapping; the caller's is
        not changed); the options themselves when there is nothing to add."""
        if not self._carrier or not isinstance(options, Mapping):
            return options  # not a mapping: enqueue refuses it with its own message
        metadata = options.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            return options  # enqueue refuses it with its own message, naming the field
        if metadata is not None and "traceparent" in metadata:
            return options  # the caller carries a context of its own
        return {**options, "metadata": {**(metadata or {}), **self._carrier}}

    def done(self, ids: list[int]) -> None:
        if self._span is None or not self._span.is_recording():
            return
        if len(ids) == 1:
            self._span.set_attribute("messaging.message.id", str(ids[0]))


@contextmanager
def enqueue_span(queues: list[str], count: int) -> Iterator[EnqueueSpan]:
    """A PRODUCER span around an enqueue of ``count`` jobs into ``queues``."""
    tracer = _tracer()
    if tracer is None:
        yield EnqueueSpan(None)
        return
    distinct = sorted(set(queues))
    destination = distinct[0] if len(distinct) == 1 else None
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
    }
    if destination is not None:
        attributes["messaging.destination.name"] = destination
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    name = f"enqueue {destination}" if destination is not None else "enqueue"
    with tracer.start_as_current_span(name, kind=_trace.SpanKind.PRODUCER, attributes=attributes) as span:
        yield EnqueueSpan(span)


@contextmanager
def run_span(job_id: int, queue: str, type: str, attempt: int, metadata: Mapping[str, Any] | None) -> Iterator[Any]:
    """A CONSUMER span around one run of a job, child of (and linked to) the context its
    enqueue left in the metadata. An exception raised inside is recorded, then re-raised."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    from opentelemetry import propagate

    carrier = {k: str(metadata[k]) for k in CONTEXT_KEYS if metadata and isinstance(metadata.get(k), str)}
    parent = propagate.extract(carrier) if carrier else None
    producer = _trace.get_current_span(parent).get_span_context() if parent is not None else None
    links = [_trace.Link(producer)] if producer is not None and producer.is_valid else None
    attributes = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.destination.name": queue,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": str(job_id),
        "jobqueue.job.type": type,
        "jobqueue.job.attempt": attempt,
    }
    with tracer.start_as_current_span(
        f"process {queue}", context=parent, kind=_trace.SpanKind.CONSUMER, attributes=attributes, links=links
    ) as span:
        yield span
