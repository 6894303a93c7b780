"""Limits (issue 12): output caps, past run_at means now, null payloads refused, worker ids
per tenant, health()'s refusal for mapped admins.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Runs its own frozen SQL (0005_limits.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0005_limits_down.sql"))
