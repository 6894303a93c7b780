"""The soak tier (`make soak`): scale, per-module databases, and the figure table + JSON.

Not part of `make test`: every test here is skipped unless ``JOBQUEUE_SOAK=1`` (the make
target sets it). ``SOAK_SCALE=quick`` shrinks durations and sizes to a few minutes in all;
the default ``full`` is the plan's size (RELIABILITY.md 4.3). Every test records its
figures and its pass criteria with ``record``; the session prints them as one table and
writes them to ``$SOAK_JSON`` (default ``soak-results/soak.json``), rewritten after every
test so that an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import os
import platform
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from tests.conftest import ROOT, SERVER

SCALES = ("quick", "full")
SCALE = os.environ.get("SOAK_SCALE", "full")
if SCALE not in SCALES:
    raise pytest.UsageError(f"SOAK_SCALE: must be one of {', '.join(SCALES)} (got {SCALE!r})")
JSON_PATH = Path(os.environ.get("SOAK_JSON") or ROOT / "soak-results" / "soak.json")
ENABLED = os.environ.get("JOBQUEUE_SOAK") == "1"

STARTED = datetime.now(UTC).isoformat(timespec="seconds")
RESULTS: dict[str, dict[str, Any]] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="soak tier: run `make soak` (or JOBQUEUE_SOAK=1)")
    for item in items:
        if "tests/soak/" in item.nodeid:
            item.add_marker(skip)


@dataclass
class Criterion:
    name: str
    ok: bool
    detail: str


def _write_json() -> None:
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "scale": SCALE,
        "started": STARTED,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "server_version_num": SERVER.version_num,
        "server": f"{SERVER.host}:{SERVER.port}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": RESULTS,
    }
    JSON_PATH.write_text(json.dumps(document, indent=2, default=str) + "\n")


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record(test_id, figures, criteria): keep a test's figures; criteria are (name, ok, detail)."""

    def _record(test_id: str, figures: dict[str, Any], criteria: list[Criterion]) -> None:
        RESULTS[test_id] = {
            "test": request.node.nodeid,
            "scale": SCALE,
            "passed": all(c.ok for c in criteria),
            "criteria": [c.__dict__ for c in criteria],
            "figures": figures,
        }
        _write_json()

    return _record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"soak figures (scale {SCALE}, PostgreSQL {SERVER.version_num}); JSON: {JSON_PATH}")
    width = max(len(c["name"]) for r in RESULTS.values() for c in r["criteria"])
    for test_id, result in RESULTS.items():
        write(f"{test_id:<8} {'PASS' if result['passed'] else 'FAIL'}  {result['test']}")
        for c in result["criteria"]:
            write(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']:<{width}}  {c['detail']}")


@pytest.fixture(scope="module")
def soak_db(postgresql_noproc: Any) -> Iterator[Callable[[str], str]]:
    """new_db(label) -> URL of a fresh database cloned from the migrated template."""
    janitors: list[DatabaseJanitor] = []

    def _new(label: str) -> str:
        name = f"jq_soak_{label}_{uuid.uuid4().hex[:8]}"
        janitor = DatabaseJanitor(
            user=postgresql_noproc.user,
            host=postgresql_noproc.host,
            port=postgresql_noproc.port,
            dbname=name,
            template_dbname=postgresql_noproc.template_dbname,
            maintenance_dbname=postgresql_noproc.maintenance_dbname,
            password=postgresql_noproc.password,
        )
        janitor.init()
        janitors.append(janitor)
        return SERVER.url(name)

    yield _new
    for janitor in janitors:
        janitor.drop()  # terminates what is still connected
