"""Tables fit an 80-column terminal (issue 14 item 6): `make demo` printed 194-column tables
whose headings rich cut to `pau…` and whose dead letters wrapped onto ten lines at 80."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from jobqueue.cli._output import fitted_table
from jobqueue.cli.dlq import DLQ_COLUMNS, dlq_row
from jobqueue.cli.observe import STATS_COLUMNS, stats_table
from jobqueue.tables import Column, FittedTable, layout

NOW = datetime(2026, 12, 6, 11, 0, tzinfo=UTC)
STATS = [
    {
        "queue": "demo",
        "paused": False,
        "pending": 0,
        "scheduled": 12,
        "retrying": 3,
        "processing": 16,
        "dead_letters": 6,
        "oldest_pending_age_s": 0.0123,
        "completed": 2994,
        "failed": 412,
        "jobs_per_minute": 598.8,
        "error_rate": 0.1209,
    },
    {
        **dict.fromkeys(("pending", "scheduled", "retrying", "processing", "dead_letters"), 0),
        "queue": "email",
        "paused": True,
        "completed": 0,
        "failed": 0,
    },
]
DEAD = [
    {
        "id": 1000 + i,
        "state": "dead_letter",
        "queue": "demo",
        "type": kind,
        "reason": reason,
        "attempt": 2,
        "max_attempts": 5,
        "dead_at": NOW,
        "last_error": error,
    }
    for i, (kind, reason, error) in enumerate(
        [
            (
                "examples.charge_card",
                "permanent_error",
                "CardDeclined: order ord-0001: card ending 0002 declined by the issuer",
            ),
            (
                "examples.charge_card",
                "permanent_error",
                "ValueError: order ord-0003: amount_cents must be positive, got 0",
            ),
            (
                "examples.flaky_api",
                "max_retries_exceeded",
                "PartnerUnavailable: /partners/inventory-sync: 503 Service Unavailable (partner outage)",
            ),
        ]
    )
]


def render(renderable: Any, width: int) -> list[str]:
    out = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    out.print(renderable)
    out.file.close()
    return out.export_text().splitlines()


def header_line(lines: list[str]) -> str:
    return next(line for line in lines if "┃" in line)


@pytest.mark.parametrize("width", [80, 100, 200])
def test_stats_table_fits_and_explains_its_columns(width: int) -> None:
    lines = render(stats_table(STATS, timedelta(minutes=5)), width)
    assert max(len(line) for line in lines) <= width, "\n".join(lines)
    header = [h.strip() for h in header_line(lines).split("┃")]
    assert "…" not in header_line(lines)
    full = {c.heading for c in STATS_COLUMNS} | {c.short for c in STATS_COLUMNS}
    assert set(header) <= full, header  # every heading whole, never cut
    assert header[0] == "queue" and "done" in header and "failed" in header and "pending" in header
    rows = [line for line in lines if line.startswith(("demo ", "email "))]
    assert len(rows) == 2, lines  # one line per queue
    assert rows[1].startswith("email (paused)")
    text = " ".join(lines)
    assert "done, failed, jobs/min, error rate: over the last 5m" in text  # what done/failed mean
    if width >= 120:
        assert "error rate" in header and "not shown" not in text


def test_dead_letter_table_fits_80_columns_one_line_per_dead_letter() -> None:
    lines = render(fitted_table("dead letters (3)", DLQ_COLUMNS, [dlq_row(r) for r in DEAD]), 80)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    header = [h.strip() for h in header_line(lines).split("┃")]
    assert header == ["id", "type", "reason", "tries", "last error"], header
    rows = [line for line in lines if line.lstrip()[:4].isdigit()]
    assert len(rows) == 3, "\n".join(lines)  # was ten lines per row
    assert rows[2].split("│")[2].strip() == "max_retries_exceeded"
    assert rows[0].rstrip().endswith("…")  # the error is cut, `dlq show ID` has it whole
    text = " ".join(lines)
    assert "not shown at 80 columns: state, dead since (UTC), queue" in text
    wide = render(fitted_table("dead letters (3)", DLQ_COLUMNS, [dlq_row(r) for r in DEAD]), 200)
    assert "dead since (UTC)" in header_line(wide) and "partner outage)" in " ".join(wide)


def test_layout_steps_shorten_headings_then_drop_then_wrap_cells_never_headings() -> None:
    columns = [Column("a", "alpha-long", short="a"), Column("b", "beta", drop=1), Column("c", "gamma")]
    cells = [{"a": "x", "b": "yyyy", "c": "z" * 30}]
    assert layout(columns, cells, 200) is not None and not layout(columns, cells, 200).short  # type: ignore[union-attr]
    fit = layout(columns, cells, 30 + 4 + 1 + 6)  # room for 'a', 'beta' and the cell with short headings
    assert fit is not None and fit.short and not fit.dropped
    fit = layout(columns, cells, 30 + 3 + 1)
    assert fit is not None and [c.key for c in fit.dropped] == ["b"]
    fit = layout(columns, cells, 20)
    assert fit is not None and fit.folded == {"c"} and fit.widths["c"] >= len("gamma")
    lines = render(FittedTable("t", columns, cells), 20)
    assert max(len(line) for line in lines) <= 20 and "gamma" in header_line(lines)
