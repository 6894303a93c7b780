"""The scenarios `jobqueue bench` knows, in the order it runs them.

A scenario is a function ``(bench, budget_s) -> None`` that measures and records rows on
the :class:`~jobqueue.bench.core.Bench`, stopping by ``budget_s`` seconds. A scenario module
joins by decorating its function with ``@scenario("name")`` and being named in
``jobqueue.bench.SCENARIO_MODULES`` (their order is the run order and the order of
``--only``'s default): a new scenario is a new module, not a longer one.

``@scenario("name", on_demand=True)`` registers one that runs only when ``--only`` names it
(overload, schedules: long, or with options of their own in ``BenchConfig.extra``). A
module with a table of its own registers its printer with ``@table``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ``(bench, budget_s) -> None``, the bench a :class:`jobqueue.bench.core.Bench` (``Any`` here
#: so that the registry, which config.py reads, imports nothing of the bench above it).
Step = Callable[[Any, float], None]

#: ``(bench, console) -> None``: prints a scenario's own table after the common ones.
Printer = Callable[[Any, Any], None]

_STEPS: dict[str, Step] = {}
_ON_DEMAND: set[str] = set()
_TABLES: list[Printer] = []


def scenario(name: str, *, on_demand: bool = False) -> Callable[[Step], Step]:
    """Register ``step`` as the scenario ``name`` (``--only name``); ``on_demand``: only then."""

    def register(step: Step) -> Step:
        if name in _STEPS and _STEPS[name] is not step:
            raise ValueError(f"bench scenario {name!r} is registered twice")
        _STEPS[name] = step
        if on_demand:
            _ON_DEMAND.add(name)
        return step

    return register


def table(printer: Printer) -> Printer:
    """Register a table printer of a scenario module (called by report.print_tables)."""
    if printer not in _TABLES:
        _TABLES.append(printer)
    return printer


def names() -> tuple[str, ...]:
    """The scenarios a run without ``--only`` runs, in run order."""
    return tuple(name for name in _STEPS if name not in _ON_DEMAND)


def known() -> tuple[str, ...]:
    """Every registered scenario, the on-demand ones included, in run order."""
    return tuple(_STEPS)


def on_demand() -> tuple[str, ...]:
    """The scenarios that run only when ``--only`` names them."""
    return tuple(name for name in _STEPS if name in _ON_DEMAND)


def tables() -> tuple[Printer, ...]:
    return tuple(_TABLES)


def step(name: str) -> Step:
    return _STEPS[name]
