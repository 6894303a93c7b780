"""Autovacuum of jobqueue.job follows its churn, not its size, and never skips the index pass (issue 13).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07

Runs its own frozen SQL (0020_vacuum_index_cleanup.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0020_vacuum_index_cleanup_down.sql"))
