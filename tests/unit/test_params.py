"""Enqueue parameter shaping and task payload binding (pure logic, no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobqueue.client import JobQueue, enqueue_params, job_document
from jobqueue.errors import InvalidInput
from jobqueue.models import Priority
from jobqueue.tasks import JobContext


def test_unknown_option_is_named() -> None:
    with pytest.raises(InvalidInput) as err:
        enqueue_params("t", {}, {"qeueu": "x"})
    assert err.value.field == "qeueu"


@pytest.mark.parametrize(
    ("payload", "field"),
    [([1, 2], "payload"), ("text", "payload"), ({"x": float("nan")}, "payload"), ({"x": object()}, "payload")],
)
def test_bad_payloads_are_refused_before_the_database(payload: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        enqueue_params("t", payload, {})
    assert err.value.field == field


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": True}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"delay": "soon"}, "delay"),
        ({"delay": float("inf")}, "delay"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at"),
        ({"tags": "one"}, "tags"),
        ({"depends_on": ["1"]}, "depends_on"),
        ({"metadata": {"x": float("inf")}}, "metadata"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        enqueue_params("t", {}, options)
    assert err.value.field == field


def test_good_options_are_shaped_for_the_statement() -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    params = enqueue_params(
        "email.send",
        {"to": "a@b"},
        {
            "priority": Priority.HIGH,
            "delay": 30,
            "timeout": timedelta(minutes=2),
            "run_at": when,
            "tags": ("a", "b"),
            "depends_on": [1, 2],
            "metadata": {"k": 1},
        },
    )
    assert params["type"] == "email.send"
    assert json.loads(params["payload"]) == {"to": "a@b"}
    assert params["priority"] == 8
    assert params["delay"] == timedelta(seconds=30)
    assert params["timeout"] == timedelta(minutes=2)
    assert params["tags"] == ["a", "b"]
    assert params["metadata"] == '{"k":1}'
    assert params["queue"] is None and params["unique_key"] is None
    assert enqueue_params("t", None, {"priority": "critical"})["priority"] == "critical"


def test_batch_documents_carry_intervals_as_seconds_and_name_the_element() -> None:
    doc = json.loads(
        job_document(0, {"type": "t", "payload": {"a": 1}, "delay": timedelta(minutes=1), "priority": Priority.LOW})
    )
    assert doc == {"type": "t", "payload": {"a": 1}, "delay": 60.0, "priority": 0}
    with pytest.raises(InvalidInput, match=r"jobs\[3\]\.colour: not an enqueue option"):
        job_document(3, {"type": "t", "colour": "red"})
    with pytest.raises(InvalidInput, match=r"jobs\[1\]"):
        job_document(1, {"payload": {}})


def test_task_payload_binds_arguments_by_name_and_checks_them() -> None:
    jq = JobQueue("postgresql://unused@localhost/x")

    @jq.task(name="math.add", queue="math", priority="high")
    def add(a: int, b: int = 2, *, scale: float = 1.0) -> float:
        return (a + b) * scale

    assert add.payload(1) == {"a": 1}
    assert add.payload(1, 3, scale=2.0) == {"a": 1, "b": 3, "scale": 2.0}
    assert add(1, 3) == 4
    with pytest.raises(InvalidInput, match="payload"):
        add.payload(1, 2, 3)
    assert add.arguments_from({"a": 1, "scale": 3.0}) == ([], {"a": 1, "scale": 3.0})
    assert add.options.values == {"queue": "math", "priority": "high"}
    bound = add.with_options(priority="low", delay=5)
    assert bound.options == {"queue": "math", "priority": "low", "delay": 5}
    with pytest.raises(InvalidInput) as err:
        add.with_options(colour="red")
    assert err.value.field == "colour"
    assert jq.registry.get("math.add") is add


def test_task_with_context_strips_it_from_the_payload() -> None:
    jq = JobQueue("postgresql://unused@localhost/x")

    @jq.task()
    def report(ctx: JobContext, n: int) -> int:
        return n

    assert report.wants_context
    assert report.payload(n=3) == {"n": 3}
    assert report.name.endswith("test_task_with_context_strips_it_from_the_payload.<locals>.report")
    with pytest.raises(TypeError, match="needs a JobContext"):
        report(3)  # type: ignore[call-arg]


def test_an_unannotated_first_parameter_named_ctx_is_the_context() -> None:
    """Issue 14 item 9: `def f(ctx, x)` made every enqueue fail with "missing ... 'ctx'"."""
    jq = JobQueue("postgresql://unused@localhost/x")

    @jq.task(name="t.ctx")
    def handler(ctx, x: int) -> int:  # type: ignore[no-untyped-def]
        return x

    assert handler.wants_context
    assert handler.payload(x=1) == {"x": 1}
    assert handler.payload(2) == {"x": 2}
    assert handler.arguments_from({"x": 3}) == ([], {"x": 3})

    @jq.task(name="t.context")
    def other(context, x: int) -> int:  # type: ignore[no-untyped-def]
        return x

    assert not other.wants_context  # only the name ctx, or the annotation, means the context
    assert other.payload(context=1, x=2) == {"context": 1, "x": 2}


def test_a_ctx_annotated_with_another_type_is_refused_when_decorated() -> None:
    jq = JobQueue("postgresql://unused@localhost/x")
    with pytest.raises(TypeError, match=r"'t\.bad'.*'ctx' is annotated 'dict'.*`ctx: JobContext`"):

        @jq.task(name="t.bad")
        def bad(ctx: dict, x: int) -> int:  # type: ignore[type-arg]
            return x

    assert jq.registry.get("t.bad") is None


def test_unique_tasks_derive_a_stable_key_from_the_payload() -> None:
    from jobqueue.tasks import _payload_key

    assert _payload_key("t", {"a": 1, "b": 2}) == _payload_key("t", {"b": 2, "a": 1})
    assert _payload_key("t", {"a": 1}) != _payload_key("u", {"a": 1})
