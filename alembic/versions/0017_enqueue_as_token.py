"""enqueue_as_token: jobqueue serve's POST /jobs as one statement (issue 18).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

Runs its own frozen SQL (0017_enqueue_as_token.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0017_enqueue_as_token_down.sql"))
