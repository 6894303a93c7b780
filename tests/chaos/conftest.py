"""Fixtures of the chaos suite, and the figure table it prints (and writes as JSON).

CHAOS_SCALE=quick (default, part of `make test`) or full (`make chaos`). Every test
records one row of figures; the table is printed at the end of the run, and written to
$CHAOS_JSON when set (`make chaos` sets chaos-results/chaos.json).

Each row's ``targets`` are the bounds of the tier that runs (docs/guarantees.md, "Chaos
figures"): a target NOT MET fails its test when it is recorded, and the run as well, so a
table that says NOT MET never comes with a green run.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import migrations
from jobqueue.config import DatabaseTarget
from jobqueue.embedded import EmbeddedServer
from tests.chaos.harness import SCALE, install_ledgers

FIGURES: dict[str, dict[str, Any]] = {}
COLUMNS = (
    ("test", "test"),
    ("jobs", "jobs"),
    ("faults", "kills/faults"),
    ("lost", "lost"),
    ("duplicates", "dup exec"),
    ("accepted", "accepted"),
    ("recovery_s", "recovery s"),
    ("during_pct", "during %"),
    ("after_pct", "after %"),
    ("targets", "targets"),
)


class Figures:
    def record(self, test_id: str, **values: Any) -> None:
        row = FIGURES.setdefault(test_id, {"test": test_id, "scale": SCALE})
        row.update(values)
        print(f"{test_id}: {json.dumps(values, default=str)}")
        missed = not_met(row)
        if missed:
            pytest.fail(f"{test_id}: target NOT MET at CHAOS_SCALE={SCALE}: {', '.join(missed)}; figures {values}")


def not_met(row: dict[str, Any]) -> list[str]:
    return [name for name, ok in (row.get("targets") or {}).items() if not ok]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0 and any(not_met(row) for row in FIGURES.values()):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures()


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "targets":
        return ", ".join(f"{name} {'met' if ok else 'NOT MET'}" for name, ok in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def figure_table() -> str:
    rows = [[_cell(row, key) for key, _ in COLUMNS] for row in FIGURES.values()]
    heads = [title for _, title in COLUMNS]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(heads), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    return "\n".join(out)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section(f"chaos figures (CHAOS_SCALE={SCALE})")
    terminalreporter.write_line(
        "throughput during/after chaos as % of a baseline measured in the same test just before the chaos; "
        "recovery: see each test's note"
    )
    terminalreporter.write_line(figure_table())
    for row in FIGURES.values():
        if row.get("note"):
            terminalreporter.write_line(f"  {row['test']}: {row['note']}")
    path = os.environ.get("CHAOS_JSON")
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(
                {
                    "scale": SCALE,
                    "finished_at": datetime.now(UTC).isoformat(),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "server": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
                    "tests": list(FIGURES.values()),
                },
                indent=2,
                default=str,
            )
        )
        terminalreporter.write_line(f"figures written to {target}")


@pytest.fixture(scope="session")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A PostgreSQL of the suite's own, which tests may crash, restart and fill up."""
    server = EmbeddedServer(home=tmp_path_factory.mktemp("pg"))
    server.ensure_running()
    yield server
    server.stop("immediate")


_private_dbs = 0


@pytest.fixture
def private_db(private_server: EmbeddedServer) -> str:
    """A fresh migrated database with the ledgers on the private server."""
    global _private_dbs
    _private_dbs += 1
    name = f"chaos_{os.getpid()}_{_private_dbs}"
    with psycopg.connect(private_server.ensure_running(), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = private_server.url(name)
    migrations.upgrade(DatabaseTarget(url, "chaos test"))
    install_ledgers(url)
    return url
