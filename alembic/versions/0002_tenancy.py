"""Security and multi-tenant mode: tenant mapping, rate limits, row-level security.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Runs its own frozen SQL (0002_tenancy.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0002_tenancy_down.sql"))
