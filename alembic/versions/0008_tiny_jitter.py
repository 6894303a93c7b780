"""retry_delay: a jitter ratio under 1e-9 counts as 0 (no float underflow error).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Runs its own frozen SQL (0008_tiny_jitter.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0008_tiny_jitter_down.sql"))
