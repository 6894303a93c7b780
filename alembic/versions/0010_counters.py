"""Counters the database keeps: enqueued, completed, failed, retried, dead-lettered, cancelled and
queue-time and run-time histograms per queue and job type (issue 17).

Revision ID: 0010
Revises: 0009 (the alerts revision, merged from branch i17alerts; written on 0008)
Create Date: 2026-12-06

Runs its own frozen SQL (0010_counters.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0010_counters_down.sql"))
