"""Named SQL statements, loaded from ``sql/queries.sql`` by their ``-- name:`` headers, and
:class:`StatementRunner`, what the library's method groups need to run them."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import cache
from typing import Any

from jobqueue.migrations import resource_dir

#: A statement's result rows, as dicts by column name.
Rows = list[dict[str, Any]]

_HEADER = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Every named statement: name -> SQL text (without the trailing semicolon)."""
    text = (resource_dir("sql") / "queries.sql").read_text()
    parts = _HEADER.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"sql/queries.sql names {name!r} twice")
        found[name] = body.strip().rstrip(";")
    return found


def query(name: str) -> str:
    return queries()[name]


class StatementRunner(ABC):
    """Runs named statements: the one thing the method groups mixed into
    :class:`jobqueue.client.JobQueue` (:class:`~jobqueue.schedules.ScheduleMethods`,
    :class:`~jobqueue.alerting.AlertMethods`) need from it. JobQueue implements it over its
    connection pool; the groups inherit it, so mypy checks their calls against it, and a
    class that mixes them in without implementing it cannot be instantiated."""

    @abstractmethod
    def _fetch(self, name: str, params: Mapping[str, Any]) -> Rows:
        """Run statement ``name`` (sql/queries.sql) with ``params`` on a connection of its
        own; its rows (none for a statement that returns none). Database errors arrive as
        jobqueue errors (:func:`jobqueue.db.translate`)."""
