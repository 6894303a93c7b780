"""API tokens for jobqueue serve; web requests act as their token's role and tenant (issue 18).

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06

Runs its own frozen SQL (0011_tokens.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0011_tokens_down.sql"))
