"""Alerts: rules, incidents, channels and routes; detection in reconcile; notifications as jobs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Runs its own frozen SQL (0009_alerts.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0009_alerts_down.sql"))
