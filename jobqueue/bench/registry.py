"""The scenarios `jobqueue bench` knows, in the order it runs them.

A scenario is a function ``(bench, budget_s) -> None`` that measures and records rows on
the :class:`~jobqueue.bench.core.Bench`, stopping by ``budget_s`` seconds. A scenario module
joins by decorating its function with ``@scenario("name")`` and being named in
``jobqueue.bench.SCENARIO_MODULES`` (their order is the run order and the order of
``--only``'s default): a new scenario is a new module, not a longer one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ``(bench, budget_s) -> None``, the bench a :class:`jobqueue.bench.core.Bench` (``Any`` here
#: so that the registry, which config.py reads, imports nothing of the bench above it).
Step = Callable[[Any, float], None]

_STEPS: dict[str, Step] = {}


def scenario(name: str) -> Callable[[Step], Step]:
    """Register ``step`` as the scenario ``name`` (``--only name``)."""

    def register(step: Step) -> Step:
        if name in _STEPS and _STEPS[name] is not step:
            raise ValueError(f"bench scenario {name!r} is registered twice")
        _STEPS[name] = step
        return step

    return register


def names() -> tuple[str, ...]:
    """Every registered scenario, in run order."""
    return tuple(_STEPS)


def step(name: str) -> Step:
    return _STEPS[name]
