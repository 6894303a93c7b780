"""cancel(): "no job" to a producer for another's job, as its reads say (issue 18).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

Runs its own frozen SQL (0018_cancel_unseen.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0018_cancel_unseen_down.sql"))
