"""The web layer's gaps (issue 18): jobqueue_operator, queue changes in job_events.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

Runs its own frozen SQL (0015_web_gaps.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0015_web_gaps_down.sql"))
