"""Security and multi-tenant mode: tenant mapping, rate limits, row-level security.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Runs its own frozen SQL (0003_tenancy.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0003_tenancy_down.sql"))
