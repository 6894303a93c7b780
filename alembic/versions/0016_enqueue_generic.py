"""_enqueue (enqueue_many's core) with generic plans: no planning at every call.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

Runs its own frozen SQL (0016_enqueue_generic.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0016_enqueue_generic_down.sql"))
