"""The initial jobqueue schema: queue core, SQL API, roles.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Runs its own frozen SQL (0001_initial.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0001_initial_down.sql"))
