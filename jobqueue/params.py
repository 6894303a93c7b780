"""Shaping a call's arguments into a statement's parameters (pure: no database here).

JSON text for the database (:func:`dumps`), the ``enqueue`` statement's parameters
(:func:`enqueue_params`), an ``enqueue_many`` batch element (:func:`job_document`) or the
typed COPY rows of a plain batch (:func:`plain_rows`), priorities and intervals, and the
filters of ``JobQueue.list``/``count``. Every bad value raises InvalidInput naming its
field, before anything is sent. :mod:`jobqueue.client` runs what these return.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from jobqueue.errors import InvalidInput
from jobqueue.models import Priority
from jobqueue.retry import as_timedelta
from jobqueue.tasks import ENQUEUE_OPTIONS

_INTERVAL_OPTIONS = ("delay", "timeout", "visibility_timeout")
_JSON_OPTIONS = ("retry_policy", "metadata")


def dumps(value: Any, field: str) -> str:
    """JSON text for the database; NaN, Infinity and non-JSON values are refused by field."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{field}: {exc}", field=field) from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def seconds(value: timedelta) -> float:
    return value.total_seconds()


#: The filters of JobQueue.list / count (the list_jobs statement's parameters but limit).
LIST_FILTERS = (
    "states",
    "queue",
    "type",
    "tenant_id",
    "before_id",
    "tag",
    "created_by",
    "created_after",
    "created_before",
    "finished_after",
    "finished_before",
)


def list_params(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(LIST_FILTERS) - {"self", "limit"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"{name}: unknown filter (known: {', '.join(LIST_FILTERS)})", field=name)
    params = {name: given.get(name) for name in LIST_FILTERS}
    params["states"] = list(params["states"]) if params["states"] else None
    return params


def enqueue_params(type: str, payload: Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The named parameters of the ``enqueue`` statement; unknown options refused by name."""
    unknown = set(options) - ENQUEUE_OPTIONS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"{name}: not an enqueue option", field=name)
    if not isinstance(type, str):
        raise InvalidInput("type: must be a string", field="type")
    if payload is not None and not isinstance(payload, Mapping):
        raise InvalidInput("payload: must be a JSON object (a mapping)", field="payload")
    params: dict[str, Any] = {name: None for name in ENQUEUE_OPTIONS}
    params.update({k: v for k, v in options.items() if v is not None})
    params["type"] = type
    params["payload"] = dumps(dict(payload or {}), "payload")
    params["priority"] = priority_param(params["priority"])
    for name in _INTERVAL_OPTIONS:
        params[name] = interval_param(params[name], name)
    for name in _JSON_OPTIONS:
        if params[name] is not None:
            params[name] = dumps(params[name], name)
    if params["tags"] is not None:
        if isinstance(params["tags"], str) or not all(isinstance(t, str) for t in params["tags"]):
            raise InvalidInput("tags: must be a list of strings", field="tags")
        params["tags"] = list(params["tags"])
    if params["depends_on"] is not None:
        deps = list(params["depends_on"])
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in deps):
            raise InvalidInput("depends_on: must be a list of job ids", field="depends_on")
        params["depends_on"] = deps
    for name in ("run_at", "expires_at"):
        value = params[name]
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidInput(f"{name}: must be a timezone-aware datetime", field=name)
    return params


def job_document(index: int, job: Mapping[str, Any]) -> str:
    """One element of an enqueue_many batch as JSON text (intervals as seconds)."""
    if not isinstance(job, Mapping) or "type" not in job:
        raise InvalidInput(f"jobs[{index}]: must be a mapping with a 'type'", field="jobs")
    doc: dict[str, Any] = {}
    for key, value in job.items():
        if key not in ENQUEUE_OPTIONS and key not in ("type", "payload"):
            raise InvalidInput(f"jobs[{index}].{key}: not an enqueue option", field=key)
        if value is None:
            continue
        if key == "priority":
            value = priority_param(value)
        elif key in _INTERVAL_OPTIONS:
            interval = interval_param(value, key)
            value = None if interval is None else interval.total_seconds()
        elif isinstance(value, datetime):
            if value.tzinfo is None:
                raise InvalidInput(f"jobs[{index}].{key}: must be a timezone-aware datetime", field=key)
            value = value.isoformat()
        doc[key] = value
    return dumps(doc, f"jobs[{index}]")


_PLAIN_KEYS = frozenset({"type", "payload", "queue", "priority", "max_attempts"})


def plain_rows(jobs: Sequence[Any]) -> list[tuple[Any, ...]] | None:
    """COPY rows (n, type, payload, queue, priority, max_attempts) when every job is plain:
    only those keys, of the simple types. None otherwise: the general path then checks
    everything and names what is wrong."""
    rows: list[tuple[Any, ...]] = []
    for n, job in enumerate(jobs):
        if not isinstance(job, Mapping) or not _PLAIN_KEYS.issuperset(job):
            return None
        type_, payload = job.get("type"), job.get("payload")
        queue, priority, attempts = job.get("queue"), job.get("priority"), job.get("max_attempts")
        if (
            not isinstance(type_, str)
            or not (payload is None or isinstance(payload, Mapping))
            or not (queue is None or isinstance(queue, str))
            or not (priority is None or (isinstance(priority, int) and not isinstance(priority, bool)))
            or not (attempts is None or (isinstance(attempts, int) and not isinstance(attempts, bool)))
        ):
            return None
        body = dumps(payload, f"jobs[{n}].payload") if payload else "{}"
        rows.append((n, type_, body, queue, None if priority is None else int(priority), attempts))
    return rows


def priority_param(value: Any) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput("priority: must be 0..10 or low, normal, high, critical", field="priority")
    if isinstance(value, Priority):
        return int(value)
    if isinstance(value, int | str):
        return value
    raise InvalidInput("priority: must be 0..10 or low, normal, high, critical", field="priority")


def interval_param(value: Any, name: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{name}: must be a finite number of seconds", field=name)
    try:
        return as_timedelta(value)
    except TypeError as exc:
        raise InvalidInput(f"{name}: {exc}", field=name) from exc
