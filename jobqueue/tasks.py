"""``@jq.task``: handlers, their defaults, and the job context they may ask for."""

from __future__ import annotations

import contextvars
import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from jobqueue.errors import InvalidInput
from jobqueue.retry import RetryCallable

P = ParamSpec("P")
R = TypeVar("R")

#: Options a task may set as defaults and a call may override (the SQL enqueue's parameters).
ENQUEUE_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "run_at",
        "delay",
        "max_attempts",
        "retry_policy",
        "unique_key",
        "expires_at",
        "tenant_id",
        "user_id",
        "tags",
        "metadata",
        "depends_on",
        "timeout",
        "visibility_timeout",
    }
)


class JobContext:
    """What a running handler may know and do about its own job.

    A handler gets it by declaring a first parameter annotated ``JobContext`` or named
    ``ctx`` without an annotation (the payload fills the others), or from
    :func:`current_job` anywhere in its call stack.
    """

    def __init__(
        self,
        *,
        id: int,
        token: int,
        queue: str,
        type: str,
        attempt: int,
        max_attempts: int,
        metadata: Mapping[str, Any],
        log: Callable[[str], None],
        progress: Callable[[float], None],
    ) -> None:
        self.id = id
        #: The lease token: unique per attempt and only growing, usable as an idempotency key.
        self.token = token
        self.queue = queue
        self.type = type
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.metadata = metadata
        self._log = log
        self._progress = progress
        # Plain flags, and an Event only for a handler that waits: a worker starts thousands
        # of jobs a second, and two Events per job were a fifth of its main thread's time.
        self._is_cancelled = False
        self._is_lease_lost = False
        self._cancel_event: threading.Event | None = None

    @property
    def cancelled(self) -> bool:
        """True once someone cancelled this running job (or the worker is giving it up)."""
        return self._is_cancelled

    @property
    def lease_lost(self) -> bool:
        """True once this worker no longer holds the lease: stop starting side effects."""
        return self._is_lease_lost

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep until the job is cancelled (True) or the timeout passes (False)."""
        with _EVENTS_LOCK:
            if self._cancel_event is None:
                self._cancel_event = threading.Event()
                if self._is_cancelled:
                    self._cancel_event.set()
            event = self._cancel_event
        return event.wait(timeout)

    def _set_cancelled(self) -> None:
        with _EVENTS_LOCK:
            self._is_cancelled = True
            if self._cancel_event is not None:
                self._cancel_event.set()

    def _set_lease_lost(self) -> None:
        self._is_lease_lost = True

    @property
    def idempotency_key(self) -> str:
        return f"jobqueue:{self.id}:{self.token}"

    def log(self, message: str) -> None:
        """Append a line to the job's log (stored in the database, fenced by the lease)."""
        self._log(message)

    def progress(self, percent: float) -> None:
        """Record progress, 0 to 100."""
        self._progress(percent)


_EVENTS_LOCK = threading.Lock()
_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("jobqueue_current_job")


def current_job() -> JobContext:
    """The context of the job the calling handler runs (LookupError outside a handler)."""
    return _current.get()


@dataclass(frozen=True)
class TaskOptions:
    """Defaults a task applies to each enqueue (a call may override them)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def merged(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - ENQUEUE_OPTIONS
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidInput(f"{name}: not an enqueue option", field=name)
        return {**self.values, **{k: v for k, v in overrides.items() if v is not None}}


class TaskHost(Protocol):
    """What a task needs of the queue that declared it: its registry, and enqueue.

    :class:`jobqueue.client.JobQueue` is one. Declared here, below the client, so that this
    module never imports the client (not even for types): tasks come first in a job's path.
    """

    @property
    def registry(self) -> Registry: ...

    def enqueue(
        self, type: str, payload: Mapping[str, Any] | None = None, *, connection: Any = None, **options: Any
    ) -> int: ...

    def periodic(self, name: str, cron: str, type: str, **options: Any) -> Any: ...


class Task(Generic[P, R]):
    """A registered handler. Call it to run it here; ``.enqueue(...)`` to run it on a worker."""

    def __init__(
        self,
        queue_client: TaskHost,
        fn: Callable[..., Any],
        *,
        name: str,
        options: TaskOptions,
        retry: RetryCallable | None,
        unique: bool | Callable[..., str],
        wants_context: bool,
    ) -> None:
        self.jq = queue_client
        self.fn = fn
        self.name = name
        self.options = options
        self.retry = retry
        self.unique = unique
        self.wants_context = wants_context
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        self._signature = signature.replace(parameters=params[1:] if wants_context else params)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.wants_context:
            raise TypeError(f"{self.name} needs a JobContext: enqueue it, or call .fn(ctx, ...)")
        result: R = self.fn(*args, **kwargs)
        return result

    def payload(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON payload for a call: the handler's arguments by name (checked now)."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidInput(f"payload: {exc}", field="payload") from exc
        payload: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = self._signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                payload.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                raise InvalidInput(f"payload: *{name} cannot be sent as JSON by name", field="payload")
            else:
                payload[name] = value
        return payload

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Enqueue a run of this task with its default options; returns the job id."""
        return self.with_options().enqueue(*args, **kwargs)

    def with_options(self, *, connection: Any = None, **overrides: Any) -> BoundTask[P]:
        """The same task with per-call options: ``send.with_options(priority="high").enqueue(...)``."""
        return BoundTask(self, self.options.merged(overrides), connection)

    def arguments_from(self, payload: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for a payload (the inverse of :meth:`payload`)."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        rest = dict(payload)
        for name, param in self._signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(rest)
                rest = {}
            elif name in rest:
                if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                    args.append(rest.pop(name))
                else:
                    kwargs[name] = rest.pop(name)
        if rest:
            raise TypeError(f"unexpected payload keys for {self.name}: {sorted(rest)}")
        return args, kwargs


class BoundTask(Generic[P]):
    """A task with its per-call options fixed; ``.enqueue(...)`` takes the handler's arguments."""

    def __init__(self, task: Task[P, Any], options: dict[str, Any], connection: Any) -> None:
        self.task = task
        self.options = options
        self.connection = connection

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        payload = self.task.payload(*args, **kwargs)
        options = dict(self.options)
        if self.task.unique and "unique_key" not in options:
            key_fn = self.task.unique
            options["unique_key"] = key_fn(**payload) if callable(key_fn) else _payload_key(self.task.name, payload)
        return self.task.jq.enqueue(self.task.name, payload, connection=self.connection, **options)


def _payload_key(name: str, payload: Mapping[str, Any]) -> str:
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}:{digest[:32]}"


class TaskDecorator:
    """The object ``jq.task(...)`` returns: applied to a function, it registers a Task."""

    def __init__(
        self, jq: TaskHost, name: str | None, options: dict[str, Any], retry: Any, unique: Any, periodic: Any = None
    ) -> None:
        self.jq = jq
        self.name = name
        self.options = options
        self.retry = retry
        self.unique = unique
        self.periodic = periodic

    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], R]) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]:
        name = self.name or f"{fn.__module__}.{fn.__qualname__}"
        retry_callable: RetryCallable | None = self.retry if callable(self.retry) else None
        options = dict(self.options)
        if isinstance(self.retry, Mapping):
            options["retry_policy"] = dict(self.retry)
        task: Task[Any, Any] = Task(
            self.jq,
            fn,
            name=name,
            options=TaskOptions({k: v for k, v in options.items() if v is not None}),
            retry=retry_callable,
            unique=self.unique or False,
            wants_context=_wants_context(fn, name),
        )
        self.jq.registry.add(task)
        if self.periodic:  # @jq.task(..., schedule=...): a schedule named after the task
            job = {k: v for k, v in task.options.values.items() if k != "unique_key"}
            self.jq.periodic(name, type=name, **self.periodic, **job)
        return task


#: A first parameter of this name is the job context even without an annotation.
CONTEXT_PARAMETER = "ctx"


def _wants_context(fn: Callable[..., Any], name: str) -> bool:
    """True when the handler's first parameter is the job context, not part of the payload:
    annotated ``JobContext``, or named ``ctx`` and not annotated. A ``ctx`` annotated with
    another type is refused (TypeError): it would silently become a payload argument that
    every enqueue must give."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        return False
    first = params[0]
    annotation = first.annotation
    if annotation is first.empty:
        return first.name == CONTEXT_PARAMETER
    if _is_job_context(annotation):
        return True
    if first.name == CONTEXT_PARAMETER:
        shown = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
        raise TypeError(
            f"task {name!r}: its first parameter 'ctx' is annotated {shown!r}, not JobContext; write "
            f"`ctx: JobContext` to receive the job context, or rename it if it is a payload field"
        )
    return False


def _is_job_context(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.split(".")[-1] == "JobContext"
    return annotation is JobContext


class Registry:
    """Task name -> Task."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}

    def add(self, task: Task[Any, Any]) -> None:
        if task.name in self._tasks and self._tasks[task.name].fn is not task.fn:
            raise ValueError(f"two tasks are named {task.name!r}")
        self._tasks[task.name] = task

    def get(self, name: str) -> Task[Any, Any] | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def queues(self) -> list[str]:
        return sorted({str(t.options.values.get("queue", "default")) for t in self._tasks.values()})

    def __len__(self) -> int:
        return len(self._tasks)


def seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
