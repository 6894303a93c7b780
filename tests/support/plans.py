"""The JSON plans of the statements a block runs, nested ones too (auto_explain): one copy.

Two filters had drifted: one kept notices containing ``"Plan"``, the other those containing
``"Query Text"``. The right test is the parsed document: a notice is a plan when its JSON
part parses to an object with a ``Plan`` (the tree the tests walk; ``Query Text`` says
which statement it was). A notice that merely mentions either word is not a plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

SETTINGS = (
    ("auto_explain.log_min_duration", "0"),
    ("auto_explain.log_nested_statements", "on"),
    ("auto_explain.log_format", "json"),
    ("auto_explain.log_level", "notice"),
)


def plans_in(notices: list[str]) -> list[dict[str, Any]]:
    """The auto_explain plans among notice texts, in order."""
    out = []
    for text in notices:
        start = text.find("{")
        if start < 0:
            continue
        try:
            document = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("Plan"), dict):
            out.append(document)
    return out


@contextmanager
def explained(conn: psycopg.Connection[Any]) -> Iterator[list[dict[str, Any]]]:
    """``with explained(conn) as plans: conn.execute(...)``: ``plans`` filled at the end of the block.

    Loads auto_explain in the session (superuser: its settings are SUSET); statements the
    block runs under another role (SET SESSION AUTHORIZATION) are explained too.
    """
    notices: list[str] = []

    def collect(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    conn.add_notice_handler(collect)
    conn.execute("LOAD 'auto_explain'")
    for knob, value in SETTINGS:
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(*knob.split(".")), sql.Literal(value)))
    plans: list[dict[str, Any]] = []
    try:
        yield plans
    finally:
        conn.execute("SET auto_explain.log_min_duration = -1")
        conn.remove_notice_handler(collect)
        plans.extend(plans_in(notices))


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan node and every node under it, depth first."""
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]
