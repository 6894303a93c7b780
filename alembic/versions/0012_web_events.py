"""job_events and event_counts: the audit trail for dashboards and live streams (issue 18).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

Runs its own frozen SQL (0012_web_events.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0012_web_events_down.sql"))
