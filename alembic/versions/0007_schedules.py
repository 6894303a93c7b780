"""Periodic schedules: cron expressions evaluated in SQL, fired by reconcile exactly once per tick.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Runs its own frozen SQL (0007_schedules.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0007_schedules_down.sql"))
