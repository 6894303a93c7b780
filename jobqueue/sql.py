"""Named SQL statements, loaded from ``sql/queries.sql`` by their ``-- name:`` headers."""

from __future__ import annotations

import re
from functools import cache

from jobqueue.migrations import resource_dir

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
