"""Health checks: jobqueue.health() and the reconcile stamp it reads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Runs its own frozen SQL (0004_health.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0004_health_down.sql"))
